// node:test reporter used inside the guest: one JSON line per finished test (and per diagnostic),
// written to the results share so the host can print the result of every scenario per kernel.
export default async function* jsonLines(source) {
  for await (const event of source) {
    const d = event.data ?? {};
    if (event.type === 'test:pass' || event.type === 'test:fail') {
      let result = event.type === 'test:pass' ? 'pass' : 'fail';
      if (d.skip !== undefined) result = 'skip';
      else if (d.todo !== undefined) result = 'todo';
      const err = d.details?.error;
      yield `${JSON.stringify({
        kind: 'test',
        result,
        name: d.name,
        file: d.file,
        nesting: d.nesting,
        ms: d.details?.duration_ms,
        ...(typeof d.skip === 'string' ? { reason: d.skip } : {}),
        ...(err ? { error: String(err.cause?.message ?? err.message ?? err).slice(0, 2000) } : {}),
      })}\n`;
    } else if (event.type === 'test:diagnostic' && d.file) {
      yield `${JSON.stringify({ kind: 'diagnostic', file: d.file, nesting: d.nesting, message: d.message })}\n`;
    }
  }
}
