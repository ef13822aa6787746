/** Runs `fusekeeper-mirrorfs` with `argv`; resolves to the exit status. */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('fusekeeper-mirrorfs: not yet available\n');
  return 1;
}
