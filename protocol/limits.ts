// Framing constants and field limits of the control protocol (docs/protocol.md, "Frame" and
// "Limits"). Every limit is checked by the encoder (EINVAL) and by the decoder (EPROTO).

/** The protocol version this codec speaks; the header's version byte must equal it. */
export const PROTOCOL_VERSION = 1;
/** Header magic: the bytes 0x46 0x4B ("FK") on the wire, 0x4B46 read as little-endian u16. */
export const MAGIC = 0x4b46;
/** Bytes of the frame header. */
export const HEADER_SIZE = 16;
/** Largest frame, header included. One SEQPACKET message is one frame. */
export const MAX_MESSAGE = 65536;
/** Largest payload: MAX_MESSAGE - HEADER_SIZE. */
export const MAX_PAYLOAD = MAX_MESSAGE - HEADER_SIZE;
/** The most fds any message carries; receivers should accept more and reject the frame. */
export const MAX_FDS_PER_MESSAGE = 1;

/** Session names: ASCII, 1..128 characters, starting with a letter or digit. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$/;
/** Longest session name, in bytes (names are ASCII). */
export const MAX_NAME_BYTES = 128;
/** Checkpoint keys: 1..1024 bytes of UTF-8 without NUL. */
export const MAX_KEY_BYTES = 1024;
/** Longest checkpoint value. With the longest key a CHECKPOINT_PUT still fits a frame. */
export const MAX_CHECKPOINT_VALUE = 61440;
/** Mountpoints: canonical absolute paths of 1..4096 bytes (PATH_MAX including the NUL is 4096). */
export const MAX_PATH_BYTES = 4096;
/** fsName and subtype of a mount: what kernel/mount.ts accepts (they end up in mount(2) arguments). */
export const MOUNT_LABEL_PATTERN = /^[A-Za-z0-9_.@:+-]{1,64}$/;
/** Longest INIT_SAVE / INIT_PARAMS blob (a fuse_init_out is 64 bytes today). */
export const MAX_INIT_PARAMS = 4096;
/** Longest HELLO.clientName and HELLO_OK.supervisorVersion, in bytes. */
export const MAX_LABEL_BYTES = 256;
/** Longest ERROR.message, in bytes. */
export const MAX_ERROR_MESSAGE = 1024;
/** ERROR.code: an errno-style name. */
export const ERROR_CODE_PATTERN = /^E[A-Z0-9]{1,31}$/;
/** Largest ERROR.errno (Linux errnos are below 4096). */
export const MAX_ERRNO = 4095;
/** Largest STATUS_REPLY JSON, in bytes. */
export const MAX_STATUS_JSON = MAX_PAYLOAD - 4;

/** Bytes of one journal entry on the wire: id u32, dev u64, ino u64. */
export const JOURNAL_ENTRY_SIZE = 20;
/** Most entries in one JOURNAL_ENTRIES message: (MAX_PAYLOAD - 4) / 20. */
export const MAX_JOURNAL_CHUNK = Math.floor((MAX_PAYLOAD - 4) / JOURNAL_ENTRY_SIZE);
/**
 * Most entries in one JOURNAL_FILE (80 MiB of entries): a receiver may allocate count x 20
 * bytes, so the count is bounded like every other length. The supervisor journals at most
 * this many ids per session.
 */
export const MAX_JOURNAL_FILE_ENTRIES = 4 * 1024 * 1024;
/**
 * Bytes one checkpoint entry takes besides its key and value, as a CHECKPOINT_ENTRY payload
 * and in a CHECKPOINT_FILE: the u16 key length and the u32 value length.
 */
export const CHECKPOINT_ENTRY_OVERHEAD = 6;
/**
 * Most checkpoint bytes a session holds, counted as in a CHECKPOINT_FILE (key, value and
 * CHECKPOINT_ENTRY_OVERHEAD per entry); also the largest CHECKPOINT_FILE. A receiver may
 * allocate this much, so it is bounded like every other length.
 */
export const MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024;
/** Most entries in one CHECKPOINT_FILE: an entry takes at least 7 bytes (a 1-byte key, an empty value). */
export const MAX_CHECKPOINT_FILE_ENTRIES = Math.floor(MAX_CHECKPOINT_BYTES / (CHECKPOINT_ENTRY_OVERHEAD + 1));
/** Most ids in one ADOPT message: (MAX_PAYLOAD - 1 - 4) / 4. */
export const MAX_ADOPT_CHUNK = Math.floor((MAX_PAYLOAD - 5) / 4);
/** Backing ids are positive int32 values (the ioctl returns an int; 0 is never allocated). */
export const MAX_BACKING_ID = 0x7fffffff;

/** HELLO_OK.features bit: the kernel has FUSE_DEV_IOC_BACKING_CLOSE_ALL. */
export const FEATURE_CLOSE_ALL = 1 << 0;
/** HELLO_OK.features bit: the kernel has FUSE_NOTIFY_RESEND. */
export const FEATURE_RESEND = 1 << 1;

/** MountSpec flags bits on the wire. */
export const MOUNT_ALLOW_OTHER = 1 << 0;
export const MOUNT_DEFAULT_PERMISSIONS = 1 << 1;
export const MOUNT_READ_ONLY = 1 << 2;
/** Every defined MountSpec flag; other bits are malformed in version 1. */
export const MOUNT_FLAGS_MASK = MOUNT_ALLOW_OTHER | MOUNT_DEFAULT_PERMISSIONS | MOUNT_READ_ONLY;
