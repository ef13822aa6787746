// Types of warm-code.js (plain JS: the bins load it before anything is compiled).
export declare const EAGER_COMPILE_FLAGS: readonly string[];
export declare const SUPERVISOR_COMPILE_FLAGS: readonly string[];
export declare function compileEagerly(flags?: readonly string[]): void;
