// Errors of the control protocol (docs/protocol.md, "Errors").
//
// Two kinds, like the FUSE codec: a malformed frame is a `ProtocolError` with code `EPROTO`
// that `decodeMessage` *returns* (never throws); an operation that fails is an ERROR reply
// carrying one of the errno codes below. The encoders throw `ProtocolError` with code
// `EINVAL` when the caller hands them a value the wire cannot carry (a programming error).

/**
 * Linux x86_64 errno numbers of every code the protocol uses in ERROR replies. The numbers
 * travel on the wire (ERROR.errno); the names are the stable `code` strings.
 */
export const ERRNO = Object.freeze({
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  EPROTO: 71,
  ENOTSUP: 95,
  ETIMEDOUT: 110,
  ESTALE: 116,
} as const);

/** An errno name the protocol defines. */
export type ErrnoCode = keyof typeof ERRNO;

/** The protocol's errno code for `errno`, or undefined for a number outside the table. */
export function errnoCode(errno: number): ErrnoCode | undefined {
  for (const [code, value] of Object.entries(ERRNO)) if (value === errno) return code as ErrnoCode;
  return undefined;
}

/** True when `code` is one of the protocol's errno codes. */
export function isErrnoCode(code: string): code is ErrnoCode {
  return Object.prototype.hasOwnProperty.call(ERRNO, code);
}

/**
 * Why a frame was rejected (decoding) or could not be built (encoding). Stable strings, meant
 * for logs and tests; peers only ever see `EPROTO`.
 */
export type ProtocolErrorReason =
  /** Fewer than 16 bytes: not even a header. */
  | 'truncated header'
  /** magic is not 0x4B46. */
  | 'bad magic'
  /** Header version is not PROTOCOL_VERSION. */
  | 'unsupported version'
  /** Header flags are not 0. */
  | 'bad flags'
  /** Header reserved field is not 0. */
  | 'bad reserved'
  /** payloadLength differs from the bytes that follow the header. */
  | 'length mismatch'
  /** Type code not in MESSAGE_TYPES. */
  | 'unknown type'
  /** The message arrived with a different number of fds than its type carries. */
  | 'wrong fd count'
  /** requestId is 0 where one is required, or set where it must be 0. */
  | 'bad request id'
  /** A supervisor-only message sent by a client or the other way round. */
  | 'wrong direction'
  /** A field's length runs past the end of the payload. */
  | 'truncated payload'
  /** The payload continues after the last field. */
  | 'trailing bytes'
  /** A message, count, string or byte field exceeds its limit. */
  | 'oversized'
  /** A string field is not valid UTF-8 or contains NUL. */
  | 'invalid string'
  /** A session name does not match NAME_PATTERN. */
  | 'invalid name'
  /** A checkpoint key is empty or longer than MAX_KEY_BYTES. */
  | 'invalid key'
  /** A mountpoint is not a canonical absolute path of at most MAX_PATH_BYTES. */
  | 'invalid path'
  /** A numeric or enumerated field holds a value the layout does not allow. */
  | 'invalid value'
  /** A reply sequence (ACQUIRE state) arrived out of order or incomplete. */
  | 'bad sequence'
  /** A bug in the decoder (an unexpected exception); never expected, caught for safety. */
  | 'internal error';

/** A frame that cannot be decoded or encoded. `code` is stable: `EPROTO` or `EINVAL`. */
export class ProtocolError extends Error {
  /** `EPROTO` from decoding (peer's fault), `EINVAL` from encoding (caller's fault). */
  readonly code: 'EPROTO' | 'EINVAL';
  readonly errno: number;
  readonly reason: ProtocolErrorReason;
  /**
   * The frame's requestId when its header was readable, so the receiver can answer
   * ERROR EPROTO on it; 0 otherwise (and for one-way messages).
   */
  readonly requestId: number;
  /** The header's type code when the header was readable, otherwise -1. */
  readonly typeCode: number;

  constructor(code: 'EPROTO' | 'EINVAL', reason: ProtocolErrorReason, detail?: string, requestId = 0, typeCode = -1) {
    super(detail ? `${reason}: ${detail}` : reason);
    this.name = 'ProtocolError';
    this.code = code;
    this.errno = ERRNO[code];
    this.reason = reason;
    this.requestId = requestId;
    this.typeCode = typeCode;
  }
}
