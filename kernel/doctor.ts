import { mkdtempSync, rmSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir, release } from 'node:os';
import { join } from 'node:path';
import { closeFd, openFd, O } from '../native/index.ts';
import { InitFlags } from './abi.ts';
import { answerInit } from './handshake.ts';
import { backingClose, backingCloseAll, backingOpen, notifyResend } from './backing.ts';
import { openFuseDevice } from './device.ts';
import { mountFuse, unmountFuse, findMount } from './mount.ts';
import { FuseKernelError } from './errors.ts';

/** Backing-id cleanup strategy after a daemon crash (DESIGN.md section 4). */
export type CleanupStrategy = 'close-all' | 'journal' | 'none';

/** Something that keeps fusekeeper from working fully, and what to do about it. */
export interface Problem {
  code: string;
  /** `error`: fusekeeper cannot work; `warning`: a feature is missing; `info`: a slower path is used. */
  severity: 'error' | 'warning' | 'info';
  message: string;
  fix: string;
}

/** What `fusekeeper doctor` found out. The JSON shape is stable. */
export interface DoctorReport {
  kernel: string;
  fuse: {
    /** Protocol the kernel offered in FUSE_INIT (`7.45`), or null when no probe mount was possible. */
    protocol: string | null;
    passthrough: boolean;
    resend: boolean;
    closeAll: boolean;
  };
  strategy: CleanupStrategy;
  privileged: boolean;
  problems: Problem[];
}

type ProblemSink = (code: string, message: string, fix: string) => void;

const SEVERITY: Record<string, Problem['severity']> = {
  NO_PASSTHROUGH: 'warning',
  NO_RESEND: 'warning',
  RESEND_FAILED: 'warning',
  PASSTHROUGH_FAILED: 'warning',
  CLOSE_ALL_FAILED: 'info',
  NO_CLOSE_ALL: 'info',
};

const CAP_SYS_ADMIN = 21n;

/** Whether this process has CAP_SYS_ADMIN in its effective set (from /proc/self/status). */
export function hasCapSysAdmin(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m !== null && ((BigInt(`0x${m[1]}`) >> CAP_SYS_ADMIN) & 1n) === 1n;
}

/** The strategy that follows from what the kernel can do. */
export function chooseStrategy(passthrough: boolean, closeAll: boolean): CleanupStrategy {
  if (!passthrough) return 'none';
  return closeAll ? 'close-all' : 'journal';
}

/**
 * Finds out what this machine's FUSE can do by trying it: mounts a throwaway connection
 * under a temp dir, answers FUSE_INIT asking for passthrough, probes BACKING_OPEN/CLOSE,
 * CLOSE_ALL and NOTIFY_RESEND, then unmounts and closes everything it opened, on every path.
 */
export async function runDoctor(): Promise<DoctorReport> {
  const report: DoctorReport = {
    kernel: release(),
    fuse: { protocol: null, passthrough: false, resend: false, closeAll: false },
    strategy: 'none',
    privileged: hasCapSysAdmin(),
    problems: [],
  };
  const problem: ProblemSink = (code, message, fix) => {
    report.problems.push({ code, severity: SEVERITY[code] ?? 'error', message, fix });
  };
  if (!report.privileged) {
    problem('NO_CAP_SYS_ADMIN', 'this process lacks CAP_SYS_ADMIN: it cannot mount FUSE connections or open passthrough backing files', 'run as root (sudo) or grant CAP_SYS_ADMIN');
    return report;
  }
  let fuseFd = -1;
  let mounted = false;
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-doctor-'));
  const mountpoint = join(dir, 'mnt');
  const backingPath = join(dir, 'backing');
  try {
    mkdirSync(mountpoint);
    writeFileSync(backingPath, 'fusekeeper doctor probe\n');
    try {
      fuseFd = openFuseDevice();
    } catch (err) {
      problem('NO_DEV_FUSE', `cannot open /dev/fuse: ${(err as Error).message}`, 'load the fuse module (modprobe fuse) and check /dev/fuse exists (10:229)');
      return report;
    }
    try {
      mountFuse(fuseFd, { mountpoint, fsName: 'fusekeeper-doctor', subtype: 'doctor' });
      mounted = true;
    } catch (err) {
      problem('MOUNT_FAILED', (err as Error).message, 'check that FUSE is enabled (CONFIG_FUSE_FS) and that mounts are allowed here');
      return report;
    }
    let agreed;
    try {
      agreed = await answerInit(fuseFd, InitFlags.INIT_EXT | InitFlags.PASSTHROUGH);
    } catch (err) {
      problem('INIT_FAILED', (err as Error).message, 'report this kernel: fusekeeper cannot work with it');
      return report;
    }
    const { offered } = agreed;
    report.fuse.protocol = `${offered.major}.${offered.minor}`;
    const offeredPassthrough = (agreed.flags & InitFlags.PASSTHROUGH) !== 0n;
    const offeredResend = (offered.flags & InitFlags.HAS_RESEND) !== 0n;
    if (!offeredPassthrough) {
      problem('NO_PASSTHROUGH', `the kernel (FUSE ${report.fuse.protocol}) does not offer FUSE_PASSTHROUGH`, 'use Linux >= 6.9 built with CONFIG_FUSE_PASSTHROUGH=y; without it files are served through the daemon and there are no backing ids to clean');
    } else {
      probeBacking(fuseFd, backingPath, report, problem);
    }
    if (offeredResend) {
      try {
        notifyResend(fuseFd);
        report.fuse.resend = true;
      } catch (err) {
        problem('RESEND_FAILED', (err as Error).message, 'in-flight requests of a crashed daemon will not be replayed; use Linux >= 6.9');
      }
    } else {
      problem('NO_RESEND', 'the kernel does not offer FUSE_HAS_RESEND', 'requests a crashed daemon had read will hang until aborted; use Linux >= 6.9');
    }
    report.strategy = chooseStrategy(report.fuse.passthrough, report.fuse.closeAll);
    if (report.fuse.passthrough && !report.fuse.closeAll) {
      problem('NO_CLOSE_ALL', 'the kernel has no FUSE_DEV_IOC_BACKING_CLOSE_ALL', 'nothing to do: the journal strategy cleans backing ids exactly; a kernel with the "fuse: improve crash recovery for backing files" series makes recovery one ioctl');
    }
    return report;
  } finally {
    if (mounted) {
      try {
        unmountFuse(mountpoint);
      } catch {
        unmountFuse(mountpoint, true);
      }
    }
    if (fuseFd >= 0) closeFd(fuseFd);
    if (!findMount(mountpoint)) rmSync(dir, { recursive: true, force: true });
  }
}

function probeBacking(
  fuseFd: number,
  backingPath: string,
  report: DoctorReport,
  problem: ProblemSink,
): void {
  const backingFd = openFd(backingPath, O.RDONLY);
  try {
    const id = backingOpen(fuseFd, backingFd);
    backingClose(fuseFd, id);
    report.fuse.passthrough = true;
    const second = backingOpen(fuseFd, backingFd);
    const result = backingCloseAll(fuseFd);
    if (result.status === 'closed') {
      report.fuse.closeAll = true;
    } else {
      backingClose(fuseFd, second);
      if (result.status !== 'unsupported') {
        problem('CLOSE_ALL_FAILED', `FUSE_DEV_IOC_BACKING_CLOSE_ALL answered ${result.errno}`, 'the journal strategy is used instead');
      }
    }
  } catch (err) {
    const code = err instanceof FuseKernelError ? err.code : 'ERR_KERNEL';
    problem('PASSTHROUGH_FAILED', `passthrough was offered but backing open/close failed: ${(err as Error).message} (${code})`, 'check CAP_SYS_ADMIN and that the backing filesystem supports passthrough');
  } finally {
    closeFd(backingFd);
  }
}

/** Human-readable one-screen rendering of a report. */
export function formatDoctorReport(r: DoctorReport): string {
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  const lines = [
    `kernel            ${r.kernel}`,
    `privileged        ${yes(r.privileged)} (CAP_SYS_ADMIN)`,
    `FUSE protocol     ${r.fuse.protocol ?? 'unknown (no probe mount)'}`,
    `passthrough       ${yes(r.fuse.passthrough)}`,
    `notify resend     ${yes(r.fuse.resend)}`,
    `BACKING_CLOSE_ALL ${yes(r.fuse.closeAll)}`,
    `cleanup strategy  ${r.strategy}`,
  ];
  if (!r.problems.some((p) => p.severity !== 'info')) lines.push('', `fusekeeper can run here (cleanup strategy ${r.strategy}).`);
  for (const p of r.problems) lines.push('', `${p.severity}: ${p.message}`, `  -> ${p.fix}`);
  return lines.join('\n');
}
