// The supervisor <-> daemon control protocol (docs/protocol.md): a pure codec over Buffers.
export * from './limits.ts';
export * from './errors.ts';
export * from './messages.ts';
export * from './names.ts';
export { checkpointEntrySize, decodeCheckpointFile, decodeMessage, describeMessage, encodeCheckpointFile, encodeJournalClose, encodeJournalOpen, encodeJournalOpenWire, encodeMessage, isJournalOpenFrame, readHeader } from './codec.ts';
export { invalidEntryIndex, JournalEntries, JournalStore } from './journal.ts';
export type { DecodeOptions, DecodeResult, FrameHeader } from './codec.ts';
export * from './sequences.ts';
