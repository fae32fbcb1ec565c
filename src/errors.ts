/**
 * One error type for the whole of Gantry. Every failure a user can meet carries a stable code
 * (for scripts and the service), a message that says what happened, and a hint that says what to
 * do about it. The CLI prints `error: MESSAGE` then `hint: HINT`, and maps the code to an exit status.
 */
export type ErrorCode =
  | 'USAGE' // bad command line
  | 'BAD_REFERENCE' // an image reference that cannot be parsed
  | 'BAD_NAME' // an image/sandbox name that is not allowed
  | 'NOT_FOUND' // an image, manifest, tag or blob that does not exist
  | 'AUTH' // the registry or its token service refused us
  | 'CREDENTIALS' // the credentials file is unreadable, unsafe or malformed
  | 'NETWORK' // connection failures, timeouts, 5xx after retries
  | 'INSECURE' // plain HTTP to a non-loopback registry without permission
  | 'MANIFEST' // a manifest or index we cannot use
  | 'PLATFORM' // no image for the requested platform
  | 'CONFIG' // an image config we cannot use
  | 'DIGEST' // content that does not match its digest
  | 'LAYER' // a layer that cannot be (safely) unpacked
  | 'STORE' // the store is unwritable, locked or damaged
  | 'DEPENDENCY' // a system tool or the native build is missing
  | 'INTERNAL';

export class GantryError extends Error {
  override readonly name = 'GantryError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string } {
    return { code: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}) };
  }
}

/** Exit statuses of the CLI, documented in the README. */
export const EXIT_CODES: Record<ErrorCode, number> = {
  USAGE: 2,
  BAD_REFERENCE: 2,
  BAD_NAME: 2,
  NOT_FOUND: 3,
  AUTH: 4,
  CREDENTIALS: 4,
  NETWORK: 5,
  INSECURE: 5,
  MANIFEST: 6,
  PLATFORM: 6,
  CONFIG: 6,
  DIGEST: 6,
  LAYER: 6,
  STORE: 7,
  DEPENDENCY: 8,
  INTERNAL: 1,
};

/** Wraps anything thrown into a GantryError, keeping GantryErrors as they are. */
export function asGantryError(err: unknown): GantryError {
  if (err instanceof GantryError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new GantryError('INTERNAL', message, 'this is a bug in Gantry: please report it with the command you ran', {
    cause: err,
  });
}
