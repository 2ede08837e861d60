// The namespace cluster (packages/testing) with this repository's services and the SDK's health wait.
import { startNetnsMesh, type NetnsMesh, type NetnsMeshOptions } from "@loramesh/testing";
import { waitForServing } from "@loramesh/sdk";

export const SERVICE_ENTRIES: NetnsMeshOptions["entries"] = {
  router: require.resolve("@loramesh/router/dist/main.js"),
  provisioner: require.resolve("@loramesh/provisioner/dist/main.js"),
  "base-worker": require.resolve("@loramesh/base-worker/dist/main.js"),
  "lora-server": require.resolve("@loramesh/lora-server/dist/main.js"),
};

export function startMeshOnHosts(
  options: Omit<NetnsMeshOptions, "entries" | "waitServing"> & Partial<Pick<NetnsMeshOptions, "waitServing">>,
): Promise<NetnsMesh> {
  return startNetnsMesh({
    entries: SERVICE_ENTRIES,
    waitServing: (address, timeoutMs) => waitForServing({ address }, timeoutMs),
    ...options,
  });
}
