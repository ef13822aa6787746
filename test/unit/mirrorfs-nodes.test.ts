import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeTable, type NodeRecord } from '../../examples/mirrorfs/nodes.ts';

const DEV = 42n;

function table(): NodeTable {
  return new NodeTable(DEV, 2n);
}

/** Paths of all nodes but the root, sorted, with removed ones marked. */
function paths(t: NodeTable): string[] {
  return t
    .records()
    .filter(([id]) => id !== '1')
    .map(([, path, , , , extra]) => (extra?.removed ? `${path} (removed)` : path))
    .sort();
}

test('the root is nodeid 1 with the source root inode, and is never forgotten', () => {
  const t = table();
  const root = t.get(1n)!;
  assert.equal(root.path, '');
  assert.equal(root.ino, 2n);
  t.forget(1n, 100n);
  assert.equal(t.get(1n), root);
  assert.equal(t.size, 1);
});

test('remember counts lookups; forget drops the node at zero', () => {
  const t = table();
  const a = t.remember('a', DEV, 10n);
  assert.equal(a.nodeid, 2n);
  assert.equal(t.remember('a', DEV, 10n), a);
  assert.equal(t.remember('a', DEV, 10n), a);
  assert.equal(a.nlookup, 3n);
  t.forget(a.nodeid, 2n);
  assert.equal(t.get(2n)?.nlookup, 1n);
  t.forget(a.nodeid, 1n);
  assert.equal(t.get(2n), undefined);
  assert.equal(t.size, 1);
  // Forgetting an unknown nodeid is harmless; a new lookup gets a fresh nodeid.
  t.forget(99n, 1n);
  assert.equal(t.remember('a', DEV, 10n).nodeid, 3n);
});

test('a name that leads back to the source root does not rename the root', () => {
  const t = table();
  const root = t.remember('d/..', DEV, 2n);
  assert.equal(root.nodeid, 1n);
  assert.equal(root.path, '');
  assert.deepEqual(root.links, []);
  t.renamed('d', 'e');
  t.unlinked('d/..');
  assert.equal(root.path, '');
  assert.equal(root.removed, false);
});

test('the same inode on another device is another node', () => {
  const t = table();
  assert.notEqual(t.remember('a', DEV, 10n).nodeid, t.remember('b', DEV + 1n, 10n).nodeid);
});

test('childPath joins below the root and below directories', () => {
  const t = table();
  assert.equal(t.childPath(t.get(1n)!, 'x'), 'x');
  const de = t.remember('d/e', DEV, 105n);
  assert.equal(t.childPath(de, 'x'), 'd/e/x');
  // `.` and `..` (LOOKUPs when the kernel reconnects an exported handle) never leave the source.
  assert.equal(t.childPath(de, '.'), 'd/e');
  assert.equal(t.childPath(de, '..'), 'd');
  assert.equal(t.childPath(t.remember('d', DEV, 106n), '..'), '');
  assert.equal(t.childPath(t.get(1n)!, '..'), '');
  assert.equal(t.childPath(t.get(1n)!, '.'), '');
});

test('hard links share a nodeid; the lookup counts add up', () => {
  const t = table();
  const a = t.remember('a', DEV, 10n);
  const b = t.remember('dir/b', DEV, 10n);
  assert.equal(a, b);
  assert.equal(b.nlookup, 2n);
  assert.equal(b.path, 'dir/b');
  assert.deepEqual(b.links, ['a']);
  // Looking the first name up again swaps them, without duplicates.
  t.remember('a', DEV, 10n);
  assert.equal(b.path, 'a');
  assert.deepEqual(b.links, ['dir/b']);
  assert.equal(t.size, 2);
});

test('unlinking the name in use falls back to another hard link; the last one marks the node removed', () => {
  const t = table();
  const n = t.remember('a', DEV, 10n);
  t.remember('b', DEV, 10n);
  t.unlinked('b');
  assert.equal(n.path, 'a');
  assert.deepEqual(n.links, []);
  assert.equal(n.removed, false);
  t.unlinked('a');
  assert.equal(n.removed, true);
  // Still known to the kernel until it forgets it; a new lookup by some name revives it.
  assert.equal(t.get(n.nodeid), n);
  t.remember('c', DEV, 10n);
  assert.equal(n.removed, false);
  assert.equal(n.path, 'c');
  assert.deepEqual(n.links, []);
});

test('a forgotten node\'s names are forgotten with it', () => {
  const t = table();
  const a = t.remember('a', DEV, 101n);
  t.forget(a.nodeid, 1n);
  const b = t.remember('b', DEV, 102n);
  t.unlinked('a');
  assert.equal(b.removed, false);
  // The same name for a new inode (the file was replaced in the source meanwhile).
  const a2 = t.remember('a', DEV, 103n);
  t.unlinked('a');
  assert.equal(a2.removed, true);
  assert.equal(b.removed, false);
});

test('unlinking a name that is only an alternative keeps the primary', () => {
  const t = table();
  const n = t.remember('a', DEV, 10n);
  t.remember('b', DEV, 10n);
  t.unlinked('a');
  assert.equal(n.path, 'b');
  assert.deepEqual(n.links, []);
  assert.equal(n.removed, false);
  t.unlinked('nothing');
  assert.equal(n.path, 'b');
});

test('rename moves the node and every path below it, not lookalike prefixes', () => {
  const t = table();
  t.remember('d', DEV, 101n);
  t.remember('d/f', DEV, 102n);
  t.remember('d/sub/g', DEV, 103n);
  t.remember('dd/h', DEV, 104n);
  t.remember('other', DEV, 105n);
  t.renamed('d', 'x/y');
  assert.deepEqual(paths(t), ['dd/h', 'other', 'x/y', 'x/y/f', 'x/y/sub/g']);
  t.renamed('x/y/f', 'x/y/f');
  assert.deepEqual(paths(t), ['dd/h', 'other', 'x/y', 'x/y/f', 'x/y/sub/g']);
});

test('rename moves hard-link alternatives too', () => {
  const t = table();
  const n = t.remember('d/a', DEV, 10n);
  t.remember('e/b', DEV, 10n);
  t.renamed('d', 'z');
  assert.equal(n.path, 'e/b');
  assert.deepEqual(n.links, ['z/a']);
  t.unlinked('e/b');
  assert.equal(n.path, 'z/a');
});

test('rename over an existing name: the replaced node loses that name', () => {
  const t = table();
  const old = t.remember('x', DEV, 101n);
  const moved = t.remember('y', DEV, 102n);
  t.renamed('y', 'x');
  assert.equal(moved.path, 'x');
  assert.equal(old.removed, true, 'the old x must not resolve to the new x');
  const linked = t.remember('p', DEV, 103n);
  t.remember('q', DEV, 103n);
  t.remember('r', DEV, 104n);
  t.renamed('r', 'q');
  assert.equal(linked.path, 'p');
  assert.equal(linked.removed, false);
});

test('exchange swaps two subtrees', () => {
  const t = table();
  t.remember('a', DEV, 101n);
  t.remember('a/f', DEV, 102n);
  t.remember('b', DEV, 103n);
  t.remember('b/g/h', DEV, 104n);
  t.remember('ab', DEV, 105n);
  t.exchanged('a', 'b');
  const byIno = new Map(t.records().map(([, path, , ino]) => [ino, path]));
  assert.equal(byIno.get('101'), 'b');
  assert.equal(byIno.get('102'), 'b/f');
  assert.equal(byIno.get('103'), 'a');
  assert.equal(byIno.get('104'), 'a/g/h');
  assert.equal(byIno.get('105'), 'ab');
  assert.ok(paths(t).every((p) => !p.includes('\0')));
  // Exchange never removes anything.
  assert.ok(!paths(t).some((p) => p.endsWith('(removed)')));
});

test('records/restore round trip keeps nodeids, paths, counts, links, removal and the next nodeid', () => {
  const t = table();
  t.remember('a', DEV, 10n);
  t.remember('a', DEV, 10n);
  const linked = t.remember('d/x', DEV, 11n);
  t.remember('d/y', DEV, 11n);
  const gone = t.remember('gone', DEV, 12n);
  t.unlinked('gone');
  const records = t.records();
  const json = JSON.parse(JSON.stringify(records)) as NodeRecord[];

  const u = new NodeTable(0n, 0n);
  u.restore(json);
  assert.deepEqual(u.records(), records);
  assert.equal(u.get(1n)?.ino, 2n);
  assert.equal(u.get(2n)?.nlookup, 2n);
  assert.deepEqual(u.get(linked.nodeid)?.links, ['d/x']);
  assert.equal(u.get(gone.nodeid)?.removed, true);
  // Hard links still resolve to the restored node; new inodes get nodeids after the highest.
  assert.equal(u.remember('d/x', DEV, 11n).nodeid, linked.nodeid);
  assert.equal(u.remember('new', DEV, 13n).nodeid, gone.nodeid + 1n);
  // Restored tables are independent of the records they came from.
  u.renamed('d', 'e');
  assert.deepEqual(json.find(([id]) => id === String(linked.nodeid))?.[5], { links: ['d/x'] });
});

test('records of plain nodes have five fields (checkpoints from before links/removed still restore)', () => {
  const t = table();
  t.remember('a', DEV, 10n);
  assert.deepEqual(t.records(), [
    ['1', '', '42', '2', '1'],
    ['2', 'a', '42', '10', '1'],
  ]);
  const u = table();
  u.restore([['1', '', '42', '2', '1'], ['7', 'b', '42', '20', '3']]);
  assert.equal(u.get(7n)?.path, 'b');
  assert.deepEqual(u.get(7n)?.links, []);
  assert.equal(u.get(7n)?.removed, false);
  assert.equal(u.remember('c', DEV, 21n).nodeid, 8n);
});
