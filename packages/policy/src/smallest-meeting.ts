/**
 * The smallest count (GPUs, LoRA servers) at which a configuration meets its SLO, by bisection.
 * A linear scan simulates every under-provisioned count, and with queues those saturate and are
 * the slowest runs; bisection visits about log2(max) counts, few of them far below the answer.
 * Assumes meeting the SLO is monotone in the count (more capacity never hurts); where a fixed
 * seed makes it not quite monotone, the answer is one count at which it holds, not necessarily
 * the smallest.
 */
export function smallestMeeting(meets: (count: number) => boolean, max: number, min = 1): number {
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max < min)
    throw new RangeError(`smallestMeeting: need integers 1 ≤ min ≤ max, got min ${min}, max ${max}`);
  if (!meets(max)) return Infinity;
  // Invariant: meets(hi); lo is below the range or fails.
  let lo = min - 1;
  let hi = max;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (meets(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}
