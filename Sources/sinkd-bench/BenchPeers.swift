import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// A peer forwarder that `sinkd-bench paced --peers` measures beside sinkd at the same pace, into
/// the same private redis-server (issue 30's table): each reads newline-delimited records on a Unix
/// stream socket and keeps them on disk until its redis output took them, in its most durable
/// documented mode; neither answers its sender. Unpacked by scripts/unpack-peers (Debian's two
/// packages conflict; neither is installed as this machine's logger).
struct PeerDaemon {
    enum Kind: String, CaseIterable {
        /// syslog-ng 3.38: unix-stream() source, redis() destination (XADD), disk-buffer(reliable(yes)).
        case syslogNG = "syslog-ng"
        /// rsyslog 8.2302: imptcp on a Unix socket, omhiredis (its 8.2302 has no XADD: LPUSH to a
        /// list), a disk queue with queue.syncqueuefiles="on".
        case rsyslog
    }

    let kind: Kind
    let socket: String
    let process: Process
    let key: String

    var pid: Int32 { process.processIdentifier }

    /// Records in redis so far.
    func delivered(port: Int) -> Int {
        redisCount(port: port, command: kind == .syslogNG ? "XLEN" : "LLEN", key: key)
    }

    static func start(_ kind: Kind, root unpacked: String, directory: String, redisPort: Int) throws -> PeerDaemon {
        let root = unpacked + "/root"  // scripts/unpack-peers: the packages' files, under DIR/root
        try FileManager.default.createDirectory(atPath: directory + "/buffer", withIntermediateDirectories: true)
        let socket = directory + "/peer.sock"
        let process: Process
        let key = "peer-\(kind.rawValue)"
        switch kind {
        case .syslogNG:
            let binary = root + "/usr/sbin/syslog-ng"
            guard FileManager.default.isExecutableFile(atPath: binary) else {
                throw ValidationError("syslog-ng is not unpacked in \(unpacked): run scripts/unpack-peers \(unpacked)")
            }
            try """
            @version: 3.38
            options { stats-freq(0); log-msg-size(65536); };
            source s_in { unix-stream("\(socket)" max-connections(64) flags(no-parse) log-msg-size(65536)); };
            destination d_redis {
              redis(host("127.0.0.1") port(\(redisPort)) command("XADD", "\(key)", "*", "payload", "$MSG")
                    disk-buffer(reliable(yes) dir("\(directory)/buffer") disk-buf-size(1073741824) mem-buf-size(16777216)));
            };
            log { source(s_in); destination(d_redis); };
            """.write(toFile: directory + "/syslog-ng.conf", atomically: true, encoding: .utf8)
            var environment = ProcessInfo.processInfo.environment
            environment["LD_LIBRARY_PATH"] = root + "/usr/lib/syslog-ng"
            process = try ServerProcess.launch(
                binary,
                [
                    "-F", "-f", directory + "/syslog-ng.conf", "--module-path=" + root + "/usr/lib/syslog-ng/3.38",
                    "-R", directory + "/persist", "-p", directory + "/pid", "-c", directory + "/ctl", "--no-caps",
                ], environment: environment, log: directory + "/peer.log")
        case .rsyslog:
            let binary = root + "/usr/sbin/rsyslogd"
            guard FileManager.default.isExecutableFile(atPath: binary) else {
                throw ValidationError("rsyslog is not unpacked in \(unpacked): run scripts/unpack-peers \(unpacked)")
            }
            try """
            global(workDirectory="\(directory)/buffer" maxMessageSize="64k")
            module(load="imptcp")
            module(load="omhiredis")
            template(name="raw" type="string" string="%rawmsg%")
            input(type="imptcp" path="\(socket)" unlink="on" ruleset="toredis")
            ruleset(name="toredis") {
              action(type="omhiredis" server="127.0.0.1" serverport="\(redisPort)" mode="queue" key="\(key)" template="raw"
                     queue.type="Disk" queue.filename="q" queue.syncqueuefiles="on" queue.saveOnShutdown="on")
            }
            """.write(toFile: directory + "/rsyslog.conf", atomically: true, encoding: .utf8)
            process = try ServerProcess.launch(
                binary,
                [
                    "-n", "-f", directory + "/rsyslog.conf", "-M", root + "/usr/lib/x86_64-linux-gnu/rsyslog", "-i",
                    directory + "/pid",
                ],
                log: directory + "/peer.log")
        }
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: socket) {
            guard process.isRunning, Date() < deadline else {
                throw ValidationError(
                    "\(kind.rawValue) did not listen on \(socket) (its log: \(directory)/peer.log)")
            }
            usleep(20_000)
        }
        return PeerDaemon(kind: kind, socket: socket, process: process, key: key)
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

/// XLEN or LLEN through redis-cli: -1 when Redis cannot be reached.
func redisCount(port: Int, command: String, key: String) -> Int {
    guard let out = try? ServerProcess.run("/usr/bin/redis-cli", ["-p", "\(port)", command, key]) else { return -1 }
    return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
}
