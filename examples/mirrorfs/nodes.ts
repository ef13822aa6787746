// The nodeid table of mirrorfs: which source path each nodeid the kernel knows stands for,
// and how many lookups the kernel holds on it. Nodeids are keyed by the source inode
// (dev, ino), so hard links share one nodeid and a nodeid stays the same for the life of
// the mount (and across a daemon restart, once the table is restored from a checkpoint).
import { join } from 'node:path';

/** One node the kernel holds a reference to. */
export interface Node {
  nodeid: bigint;
  /** Path relative to the source root ('' for the root). */
  path: string;
  dev: bigint;
  ino: bigint;
  /** Lookups the kernel holds (FORGET subtracts); the root is never forgotten. */
  nlookup: bigint;
}

/** A serialisable snapshot of one node, for checkpoints. */
export type NodeRecord = [nodeid: string, path: string, dev: string, ino: string, nlookup: string];

export class NodeTable {
  readonly #byId = new Map<bigint, Node>();
  readonly #byInode = new Map<string, Node>();
  #next = 2n;

  constructor(rootDev: bigint, rootIno: bigint) {
    this.#insert({ nodeid: 1n, path: '', dev: rootDev, ino: rootIno, nlookup: 1n });
  }

  #insert(node: Node): Node {
    this.#byId.set(node.nodeid, node);
    this.#byInode.set(`${node.dev}:${node.ino}`, node);
    if (node.nodeid >= this.#next) this.#next = node.nodeid + 1n;
    return node;
  }

  get(nodeid: bigint): Node | undefined {
    return this.#byId.get(nodeid);
  }

  get size(): number {
    return this.#byId.size;
  }

  /** Source path (relative) of `name` inside directory `parent`. */
  childPath(parent: Node, name: string): string {
    return parent.path === '' ? name : join(parent.path, name);
  }

  /**
   * Records one more kernel lookup of the inode (dev, ino) found at `path`: the existing
   * node for that inode (its path updated) or a new one.
   */
  remember(path: string, dev: bigint, ino: bigint): Node {
    const existing = this.#byInode.get(`${dev}:${ino}`);
    if (existing) {
      existing.path = path;
      existing.nlookup++;
      return existing;
    }
    return this.#insert({ nodeid: this.#next, path, dev, ino, nlookup: 1n });
  }

  /** Drops `count` lookups; forgets the node at zero (never the root). */
  forget(nodeid: bigint, count: bigint): void {
    const node = this.#byId.get(nodeid);
    if (!node || nodeid === 1n) return;
    node.nlookup -= count;
    if (node.nlookup <= 0n) {
      this.#byId.delete(nodeid);
      const key = `${node.dev}:${node.ino}`;
      if (this.#byInode.get(key) === node) this.#byInode.delete(key);
    }
  }

  /** After a rename of `from` to `to`: every node at or below `from` moves. */
  renamed(from: string, to: string): void {
    const prefix = `${from}/`;
    for (const node of this.#byId.values()) {
      if (node.path === from) node.path = to;
      else if (node.path.startsWith(prefix)) node.path = to + node.path.slice(from.length);
    }
  }

  /** After RENAME_EXCHANGE of `a` and `b`: nodes below each swap places. */
  exchanged(a: string, b: string): void {
    const marker = '\0swap';
    this.renamed(a, marker);
    this.renamed(b, a);
    this.renamed(marker, b);
  }

  /** Snapshot for a checkpoint. */
  records(): NodeRecord[] {
    return [...this.#byId.values()].map((n) => [String(n.nodeid), n.path, String(n.dev), String(n.ino), String(n.nlookup)]);
  }

  /** Replaces the table with a checkpointed snapshot. */
  restore(records: NodeRecord[]): void {
    this.#byId.clear();
    this.#byInode.clear();
    this.#next = 2n;
    for (const [nodeid, path, dev, ino, nlookup] of records) {
      this.#insert({ nodeid: BigInt(nodeid), path, dev: BigInt(dev), ino: BigInt(ino), nlookup: BigInt(nlookup) });
    }
  }

  /** One node as a checkpoint record. */
  record(node: Node): NodeRecord {
    return [String(node.nodeid), node.path, String(node.dev), String(node.ino), String(node.nlookup)];
  }
}
