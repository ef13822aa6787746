// Run by backing.test.ts without CAP_SYS_ADMIN (setpriv drops it from the bounding set): tries
// FUSE_DEV_IOC_BACKING_CLOSE_ALL on the /dev/fuse fd it inherited as fd 3 and prints what happened.
import { backingCloseAll } from '../../../../kernel/backing.ts';
import { hasCapSysAdmin } from '../../../../kernel/doctor.ts';

const result = backingCloseAll(3);
process.stdout.write(`${JSON.stringify({ capSysAdmin: hasCapSysAdmin(), result })}\n`);
