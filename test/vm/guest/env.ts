// Which kernel a guest test runs on. test/vm/tier.mjs boots each build with
// FUSEKEEPER_VM_KERNEL=patched|unpatched; outside the VM the guest tests skip.
export type VmKernel = 'patched' | 'unpatched';

function read(): VmKernel | null {
  const v = process.env.FUSEKEEPER_VM_KERNEL;
  if (v === 'patched' || v === 'unpatched') return v;
  return null;
}

export const vmKernel: VmKernel | null = read();

/** `test(..., { skip })` option: a reason outside the VM, false inside. */
export const skipOutsideVm: string | false = vmKernel ? false : 'runs only inside the VM tier (FUSEKEEPER_VM_KERNEL unset): npm run test:vm';

/** True on the build with "fuse: improve crash recovery for backing files". */
export const patched = vmKernel === 'patched';
