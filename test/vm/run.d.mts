// Types of the parts of run.mjs that TypeScript callers use (bench/chaos-vm.ts).
export const GUEST_RESULTS: string;
export function runInVm(opts: {
  kernel: string;
  command: string[];
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  memoryMb?: number;
  cpuCount?: number;
  label?: string;
  keepResults?: boolean;
  print?: boolean;
}): Promise<{ status: number; timedOut: boolean; bootSeconds: number | null; seconds: number; resultsDir: string; console: string }>;
