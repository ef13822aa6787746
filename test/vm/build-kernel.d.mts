// Types of the parts of build-kernel.mjs that TypeScript callers use (bench/chaos-vm.ts).
export const VARIANTS: string[];
export function buildKernels(variants?: string[], opts?: { force?: boolean; keepBuild?: boolean }): Promise<Record<string, string>>;
