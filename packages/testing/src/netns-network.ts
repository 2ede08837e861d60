/**
 * A multi-host network on one machine, from Linux network namespaces (needs root and `ip netns`).
 *
 * Each host is a namespace with its own loopback and one `eth0` (a veth) plugged into a bridge in a
 * switch namespace; the test process reaches every host through an uplink veth into the same bridge
 * (10.77.<octet>.254). No host shares a loopback or an address with another, so traffic between them
 * crosses real links; taking a host's switch port down partitions it, bringing it up heals it.
 *
 * Names are unique per run: namespaces are `lmt-<pid>-<octet>-<host>`, and the uplink `lm77x<octet>`
 * (creating that link in the root namespace is what reserves the octet against parallel runs).
 * `destroy()` stops what runs inside and removes everything; an `exit` hook does the same when a run
 * ends without it, and `reapDeadNetworks()` removes what runs killed outright left behind.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { promisify } from "node:util";
import { UnavailableError } from "@loramesh/errors";

const execFileAsync = promisify(execFile);

/** Prefix of every namespace this module creates (and the only ones the reaper touches). */
export const NETNS_PREFIX = "lmt-";
const UPLINK_PREFIX = "lm77x";
const NAME_RE = /^lmt-(\d+)-(\d+)-[a-z0-9]+$/;

async function ip(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("ip", args);
  return stdout;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Why this machine cannot build namespace networks, or undefined when it can (a real probe). */
export async function netnsUnavailableReason(): Promise<string | undefined> {
  if (process.platform !== "linux") return "network namespaces need Linux";
  if (process.getuid?.() !== 0) return "not root: creating network namespaces needs root";
  const probe = `${NETNS_PREFIX}${process.pid}-0-probe`;
  try {
    await ip("netns", "add", probe);
    await ip("-n", probe, "link", "set", "lo", "up");
  } catch (err) {
    return `ip netns is unavailable: ${(err as Error).message.split("\n")[0]}`;
  } finally {
    await ip("netns", "del", probe).catch(() => undefined);
  }
  return undefined;
}

/** Namespaces this module may own: every `lmt-*` name. */
async function listOurNamespaces(): Promise<string[]> {
  const out = await ip("netns", "list").catch(() => "");
  return out
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(NETNS_PREFIX));
}

function killNamespaceSync(ns: string): void {
  try {
    const pids = execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8" }).split("\n").filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // already gone
      }
    }
  } catch {
    // the namespace is gone already
  }
  try {
    execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  } catch {
    // the namespace is gone already
  }
}

/**
 * Removes networks left by runs whose process no longer exists (killed before their cleanup ran):
 * kills what still runs in their namespaces and deletes them. Returns the names removed.
 */
export async function reapDeadNetworks(): Promise<string[]> {
  const dead = (await listOurNamespaces()).filter((ns) => {
    const m = NAME_RE.exec(ns);
    return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  });
  for (const ns of dead) killNamespaceSync(ns);
  return dead;
}

export interface NetnsHost {
  /** The host's name in the test (for example "worker0"). */
  readonly name: string;
  /** Its namespace (for `ip netns exec`). */
  readonly namespace: string;
  /** Its address on the bridge; services listen on `${address}:0`. */
  readonly address: string;
}

export interface SpawnInOptions {
  env?: NodeJS.ProcessEnv;
  /** stdio of the child; add "ipc" to receive a node child's process.send messages. */
  stdio?: StdioOptions;
}

/** Live networks of this process, removed by the exit hook if their owner forgets. */
const live = new Set<NetnsNetwork>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const network of live) network.destroySync();
  });
}

export class NetnsNetwork {
  private readonly hosts = new Map<string, NetnsHost & { port: string }>();
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(
    /** The third octet: hosts are 10.77.<octet>.1…253, the test process 10.77.<octet>.254. */
    readonly octet: number,
    private readonly switchNs: string,
    private readonly uplink: string,
  ) {}

  /** The address the test process has on this network. */
  get clientAddress(): string {
    return `10.77.${this.octet}.254`;
  }

  /** Creates the switch (a bridge in its own namespace) and the test process's uplink to it. */
  static async create(): Promise<NetnsNetwork> {
    await reapDeadNetworks();
    installExitHook();
    const start = 1 + (process.pid % 250);
    for (let i = 0; i < 250; i++) {
      const octet = 1 + ((start + i) % 250);
      const switchNs = `${NETNS_PREFIX}${process.pid}-${octet}-sw`;
      const uplink = `${UPLINK_PREFIX}${octet}`;
      try {
        await ip("netns", "add", switchNs);
      } catch {
        continue; // this run already uses that octet
      }
      try {
        // The uplink's name is unique in the root namespace: creating it reserves the octet.
        await ip("link", "add", uplink, "type", "veth", "peer", "name", "uplink", "netns", switchNs);
      } catch {
        await ip("netns", "del", switchNs).catch(() => undefined);
        continue;
      }
      const network = new NetnsNetwork(octet, switchNs, uplink);
      live.add(network);
      try {
        await network.wire();
      } catch (err) {
        await network.destroy();
        throw err;
      }
      return network;
    }
    throw new UnavailableError("no free 10.77.x.0/24 network for a namespace cluster");
  }

  private async wire(): Promise<void> {
    const sw = ["-n", this.switchNs];
    await ip(...sw, "link", "set", "lo", "up");
    await ip(...sw, "link", "add", "br0", "type", "bridge");
    await ip(...sw, "link", "set", "br0", "up");
    await ip(...sw, "link", "set", "uplink", "master", "br0", "up");
    await ip("addr", "add", `${this.clientAddress}/24`, "dev", this.uplink);
    await ip("link", "set", this.uplink, "up");
  }

  /** Adds a host: a namespace with loopback up and eth0 on the bridge at the next address. */
  async addHost(name: string): Promise<NetnsHost> {
    if (!/^[a-z0-9]{1,20}$/.test(name)) throw new Error(`host name ${name}: lowercase letters and digits only`);
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    const index = this.hosts.size + 1;
    if (index > 253) throw new Error("at most 253 hosts on one network");
    const namespace = `${NETNS_PREFIX}${process.pid}-${this.octet}-${name}`;
    const address = `10.77.${this.octet}.${index}`;
    const port = `p${index}`;
    await ip("netns", "add", namespace);
    const host = { name, namespace, address, port };
    this.hosts.set(name, host);
    await ip("-n", namespace, "link", "set", "lo", "up");
    await ip("link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", port, "netns", this.switchNs);
    await ip("-n", namespace, "addr", "add", `${address}/24`, "dev", "eth0");
    await ip("-n", namespace, "link", "set", "eth0", "up");
    await ip("-n", this.switchNs, "link", "set", port, "master", "br0", "up");
    return { name, namespace, address };
  }

  host(name: string): NetnsHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name}`);
    return { name: h.name, namespace: h.namespace, address: h.address };
  }

  /** Takes the host's switch port down: nothing reaches it or leaves it until `heal`. */
  async partition(name: string): Promise<void> {
    await this.setPort(name, "down");
  }

  /** Brings the host's switch port back up. */
  async heal(name: string): Promise<void> {
    await this.setPort(name, "up");
  }

  /**
   * Cuts only the path between two hosts, silently (a blackhole route each way: packets are
   * dropped, no reset or ICMP), while each still reaches every other host. Undone by `mend`.
   */
  async cut(a: string, b: string): Promise<void> {
    const [ha, hb] = [this.hostEntry(a), this.hostEntry(b)];
    await ip("-n", ha.namespace, "route", "add", "blackhole", `${hb.address}/32`);
    await ip("-n", hb.namespace, "route", "add", "blackhole", `${ha.address}/32`);
  }

  /** Restores the path `cut` removed. */
  async mend(a: string, b: string): Promise<void> {
    const [ha, hb] = [this.hostEntry(a), this.hostEntry(b)];
    await ip("-n", ha.namespace, "route", "del", "blackhole", `${hb.address}/32`);
    await ip("-n", hb.namespace, "route", "del", "blackhole", `${ha.address}/32`);
  }

  private hostEntry(name: string): NetnsHost & { port: string } {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  private async setPort(name: string, state: "up" | "down"): Promise<void> {
    await ip("-n", this.switchNs, "link", "set", this.hostEntry(name).port, state);
  }

  /** Starts `command args` inside the host's namespace (`ip netns exec`); stopped by `destroy()`. */
  spawnIn(name: string, command: string, args: string[], options: SpawnInOptions = {}): ChildProcess {
    if (this.destroyed) throw new Error("the network is destroyed");
    const h = this.host(name);
    const child = spawn("ip", ["netns", "exec", h.namespace, command, ...args], {
      stdio: options.stdio ?? ["ignore", "inherit", "inherit"],
      env: options.env ?? process.env,
    });
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
    return child;
  }

  /** Stops the processes it started (SIGTERM, then SIGKILL) and removes every namespace and link. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await Promise.all([...this.children].map((c) => stopChild(c)));
    this.destroySync();
  }

  /** The synchronous part of `destroy()`, also run from the process's exit hook. */
  destroySync(): void {
    this.destroyed = true;
    live.delete(this);
    for (const child of this.children) child.kill("SIGKILL");
    // Host namespaces first (their veths die with them), then the switch (and the uplink with it).
    for (const h of this.hosts.values()) killNamespaceSync(h.namespace);
    this.hosts.clear();
    killNamespaceSync(this.switchNs);
    try {
      execFileSync("ip", ["link", "del", this.uplink], { stdio: "ignore" });
    } catch {
      // removed with the switch namespace
    }
  }
}

/** SIGTERM, then SIGKILL after 10 s; resolves when the child has exited. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}
