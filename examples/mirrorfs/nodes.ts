// The nodeid table of mirrorfs: which source path each nodeid the kernel knows stands for,
// and how many lookups the kernel holds on it. Nodeids are keyed by the source inode
// (dev, ino), so hard links share one nodeid and a nodeid stays the same for the life of
// the mount (and across a daemon restart, once the table is restored from a checkpoint).
// A node with several names (hard links) remembers each name the kernel looked up, so that
// unlinking one of them leaves the node reachable through another; a node whose last known
// name was unlinked or replaced is marked removed rather than left pointing at whatever
// takes that name next.
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
  /** Other known names of the same inode (hard links), relative like `path`. */
  links: string[];
  /** Every known name was unlinked or replaced: `path` is stale, operations by path fail. */
  removed: boolean;
}

/** A serialisable snapshot of one node, for checkpoints (the last element only when needed). */
export type NodeRecord = [nodeid: string, path: string, dev: string, ino: string, nlookup: string, extra?: { links?: string[]; removed?: boolean }];

/** Told about every change of the table once the changing call is complete, e.g. to keep a checkpoint current. */
export interface NodeObserver {
  /** `node` is new or changed (lookup count, names, removed flag). */
  changed(node: Node): void;
  /** `nodeid` was forgotten. */
  dropped(nodeid: bigint): void;
}

export class NodeTable {
  readonly #byId = new Map<bigint, Node>();
  readonly #byInode = new Map<string, Node>();
  /** Every known name (primary and hard links) of every node but the root, for `unlinked`. */
  readonly #byName = new Map<string, Node>();
  #next = 2n;
  /** Receives changes; `restore` does not report (the state came from the checkpoint). */
  observer: NodeObserver | undefined;

  constructor(rootDev: bigint, rootIno: bigint) {
    this.#insert({ nodeid: 1n, path: '', dev: rootDev, ino: rootIno, nlookup: 1n, links: [], removed: false });
  }

  #insert(node: Node): Node {
    this.#byId.set(node.nodeid, node);
    this.#byInode.set(`${node.dev}:${node.ino}`, node);
    this.#index(node);
    if (node.nodeid >= this.#next) this.#next = node.nodeid + 1n;
    return node;
  }

  #report(nodes: Iterable<Node>): void {
    const o = this.observer;
    if (o) for (const n of nodes) o.changed(n);
  }

  /** The nodeid the next new node gets. */
  get nextNodeid(): bigint {
    return this.#next;
  }

  /** New nodes get nodeids from `next` on (or higher): ids handed out before a restart are not reused. */
  continueFrom(next: bigint): void {
    if (next > this.#next) this.#next = next;
  }

  #index(node: Node): void {
    if (node.nodeid === 1n) return;
    if (!node.removed) this.#byName.set(node.path, node);
    for (const l of node.links) this.#byName.set(l, node);
  }

  #unindex(node: Node): void {
    for (const name of [node.path, ...node.links]) if (this.#byName.get(name) === node) this.#byName.delete(name);
  }

  #reindex(): void {
    this.#byName.clear();
    for (const node of this.#byId.values()) this.#index(node);
  }

  get(nodeid: bigint): Node | undefined {
    return this.#byId.get(nodeid);
  }

  get size(): number {
    return this.#byId.size;
  }

  /**
   * Source path (relative) of `name` inside directory `parent`. `.` and `..` (looked up by
   * the kernel when it reconnects an exported file handle) stay inside the source.
   */
  childPath(parent: Node, name: string): string {
    if (name === '.') return parent.path;
    if (name === '..') return parent.path.includes('/') ? parent.path.slice(0, parent.path.lastIndexOf('/')) : '';
    return parent.path === '' ? name : join(parent.path, name);
  }

  /**
   * Records one more kernel lookup of the inode (dev, ino) found at `path`: the existing
   * node for that inode (`path` becomes its primary name, the previous one is kept as an
   * alternative) or a new one.
   */
  remember(path: string, dev: bigint, ino: bigint): Node {
    const existing = this.#byInode.get(`${dev}:${ino}`);
    if (existing) {
      // The root keeps its name whatever leads back to it.
      if ((existing.path !== path || existing.removed) && existing.nodeid !== 1n) {
        this.#unindex(existing);
        existing.links = existing.links.filter((l) => l !== path);
        if (!existing.removed && existing.path !== path) existing.links.push(existing.path);
        existing.path = path;
        existing.removed = false;
        this.#index(existing);
      }
      existing.nlookup++;
      this.#report([existing]);
      return existing;
    }
    const node = this.#insert({ nodeid: this.#next, path, dev, ino, nlookup: 1n, links: [], removed: false });
    this.#report([node]);
    return node;
  }

  /** Drops `count` lookups; forgets the node at zero (never the root). */
  forget(nodeid: bigint, count: bigint): void {
    const node = this.#byId.get(nodeid);
    if (!node || nodeid === 1n) return;
    node.nlookup -= count;
    if (node.nlookup > 0n) {
      this.#report([node]);
      return;
    }
    this.#byId.delete(nodeid);
    this.#unindex(node);
    const key = `${node.dev}:${node.ino}`;
    if (this.#byInode.get(key) === node) this.#byInode.delete(key);
    this.observer?.dropped(nodeid);
  }

  /**
   * After `path` was unlinked (or removed with rmdir): the node known by that name forgets
   * it, falling back to another name of the same inode, or is marked removed.
   */
  unlinked(path: string): void {
    const node = this.#unlink(path);
    if (node) this.#report([node]);
  }

  #unlink(path: string): Node | undefined {
    const node = this.#byName.get(path);
    if (!node) return undefined;
    this.#unindex(node);
    node.links = node.links.filter((l) => l !== path);
    if (node.path === path && !node.removed) {
      const other = node.links.shift();
      if (other === undefined) node.removed = true;
      else node.path = other;
    }
    this.#index(node);
    return node;
  }

  /** After a rename of `from` to `to` (replacing whatever `to` was): every node at or below `from` moves. */
  renamed(from: string, to: string): void {
    if (from === to) return;
    const changed = new Set<Node>();
    const replaced = this.#unlink(to);
    if (replaced) changed.add(replaced);
    this.#move(from, to, changed);
    this.#report(changed);
  }

  #move(from: string, to: string, changed: Set<Node>): void {
    const prefix = `${from}/`;
    const moved = (p: string): string => (p === from ? to : p.startsWith(prefix) ? to + p.slice(from.length) : p);
    for (const node of this.#byId.values()) {
      if (node.nodeid === 1n) continue;
      const path = moved(node.path);
      const links = node.links.map(moved);
      if (path === node.path && links.every((l, i) => l === node.links[i])) continue;
      node.path = path;
      node.links = links;
      changed.add(node);
    }
    this.#reindex();
  }

  /** After RENAME_EXCHANGE of `a` and `b`: nodes below each swap places. */
  exchanged(a: string, b: string): void {
    const marker = '\0swap';
    const changed = new Set<Node>();
    this.#move(a, marker, changed);
    this.#move(b, a, changed);
    this.#move(marker, b, changed);
    this.#report(changed);
  }

  /** Snapshot for a checkpoint. */
  records(): NodeRecord[] {
    return [...this.#byId.values()].map((n) => this.record(n));
  }

  /** Replaces the table with a checkpointed snapshot; without a record for nodeid 1 the current root stays. */
  restore(records: NodeRecord[]): void {
    const root = this.#byId.get(1n)!;
    this.#byId.clear();
    this.#byInode.clear();
    this.#byName.clear();
    this.#next = 2n;
    for (const [nodeid, path, dev, ino, nlookup, extra] of records) {
      this.#insert({ nodeid: BigInt(nodeid), path, dev: BigInt(dev), ino: BigInt(ino), nlookup: BigInt(nlookup), links: [...(extra?.links ?? [])], removed: extra?.removed ?? false });
    }
    if (!this.#byId.has(1n)) this.#insert(root);
  }

  /** One node as a checkpoint record. */
  record(node: Node): NodeRecord {
    return nodeRecord(node);
  }
}

/** One node as a checkpoint record. */
export function nodeRecord(node: Node): NodeRecord {
  const rec: NodeRecord = [String(node.nodeid), node.path, String(node.dev), String(node.ino), String(node.nlookup)];
  if (node.links.length || node.removed) rec.push({ ...(node.links.length ? { links: [...node.links] } : {}), ...(node.removed ? { removed: true } : {}) });
  return rec;
}
