import {
  FailedPreconditionError,
  InvalidArgumentError,
  LoraMeshError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
} from "@loramesh/errors";

/** A tensor's shape does not fit the op (thrown by every native op). */
export class NativeShapeError extends InvalidArgumentError {}
/** A tensor has a dtype the op does not accept, or a typed array that does not match its dtype. */
export class NativeDTypeError extends InvalidArgumentError {}
/** An adapter slot, expert, token id, position or cache block is out of range. */
export class NativeSlotError extends InvalidArgumentError {}
/** Any other bad argument (a rank above max_rank, a non-positive eps, ...). */
export class NativeArgumentError extends InvalidArgumentError {}
/** Tensors on mixed devices, or a CUDA tensor where this build or machine has no CUDA. */
export class NativeDeviceError extends FailedPreconditionError {}
/** The CUDA runtime failed. */
export class NativeCudaError extends UnavailableError {}
/** An allocation failed. */
export class NativeMemoryError extends ResourceExhaustedError {}
/** The LoRA server behind a shared-memory ring died, detached this worker or did not answer in time. */
export class NativeUnavailableError extends UnavailableError {}
/** The LoRA server behind a shared-memory ring does not hold an adapter the site names. */
export class NativeNotFoundError extends NotFoundError {}

const BY_CODE: Record<string, new (message: string, options?: { cause?: unknown }) => LoraMeshError> = {
  LM_ERR_SHAPE: NativeShapeError,
  LM_ERR_DTYPE: NativeDTypeError,
  LM_ERR_SLOT: NativeSlotError,
  LM_ERR_ARGUMENT: NativeArgumentError,
  LM_ERR_DEVICE: NativeDeviceError,
  LM_ERR_CUDA: NativeCudaError,
  LM_ERR_MEMORY: NativeMemoryError,
  LM_ERR_UNAVAILABLE: NativeUnavailableError,
  LM_ERR_NOT_FOUND: NativeNotFoundError,
};

/** Turns an error raised by the addon (an Error with a `code` such as LM_ERR_SHAPE) into its typed class. */
export function toNativeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const code = (err as Error & { code?: unknown }).code;
  const Type = typeof code === "string" ? BY_CODE[code] : undefined;
  return Type ? new Type(err.message, { cause: err }) : err;
}
