import SinkdCore
import CSystemd
#if canImport(Glibc)
import Glibc
#endif

/// The service manager's notification protocol (sd_notify(3)), through libsystemd: readiness,
/// status, reloading, stopping, watchdog pings, start-up timeout extension. Every call is a no-op
/// when NOTIFY_SOCKET is not set (not started by systemd, or Type=simple).
public struct SystemdNotifier: Sendable {
    /// Whether a service manager listens (NOTIFY_SOCKET is set).
    public let isActive: Bool

    public init(environment: [String: String] = SystemdEnvironment.current) {
        isActive = !(environment["NOTIFY_SOCKET"] ?? "").isEmpty
    }

    /// Sends `assignments` ("KEY=value" lines). Returns false when nothing was sent.
    @discardableResult
    public func send(_ assignments: [String]) -> Bool {
        guard isActive else { return false }
        // STATUS= is one line: a newline would start a new assignment.
        let text = assignments.map { $0.replacingNewlines() }.joined(separator: "\n")
        return sd_notify(0, text) > 0
    }

    public func ready(status: String) { send(["READY=1", "STATUS=" + Redactor.shared.redact(status)]) }
    public func status(_ status: String) { send(["STATUS=" + Redactor.shared.redact(status)]) }
    public func stopping(status: String = "stopping") { send(["STOPPING=1", "STATUS=" + status]) }
    public func watchdogPing() { send(["WATCHDOG=1"]) }

    /// Asks for more start-up (or reload) time: the manager waits `microseconds` more from now.
    public func extendTimeout(microseconds: UInt64, status: String) {
        send(["EXTEND_TIMEOUT_USEC=\(microseconds)", "STATUS=" + status])
    }

    /// RELOADING=1 with the CLOCK_MONOTONIC time in microseconds, as Type=notify-reload requires.
    public func reloading(status: String = "reloading the configuration") {
        send(["RELOADING=1", "MONOTONIC_USEC=\(Self.monotonicMicroseconds())", "STATUS=" + status])
    }

    public static func monotonicMicroseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }

    /// The watchdog interval when WATCHDOG_USEC is set for this process (WATCHDOG_PID unset or
    /// ours), else nil. sd_watchdog_enabled(3) does the checks.
    public static func watchdogInterval() -> Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(usec))
    }
}

/// The process environment as a dictionary (read once per call).
public enum SystemdEnvironment {
    public static var current: [String: String] {
        var out: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let pair = String(cString: entry)
            if let eq = pair.firstIndex(of: "=") {
                out[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
            p += 1
        }
        return out
    }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(map { $0.isNewline ? " " : $0 })
    }
}

/// Sockets passed by the service manager (socket activation), by name: sd_listen_fds_with_names(3).
public enum ListenFDs {
    public struct Passed: Sendable, Equatable {
        public var fd: CInt
        public var name: String
    }

    /// The passed descriptors (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), each marked close-on-exec;
    /// the variables are then removed from the environment so children do not inherit them.
    public static func take() -> [Passed] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let n = sd_listen_fds_with_names(1, &names)
        guard n > 0 else { return [] }
        defer {
            if let names {
                for i in 0..<Int(n) { free(names[i]) }
                free(names)
            }
        }
        return (0..<n).map { i in
            let fd = SD_LISTEN_FDS_START + i
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let name = names?[Int(i)].map { String(cString: $0) } ?? "unknown"
            return Passed(fd: fd, name: name)
        }
    }

    /// Which passed descriptor serves which socket: by FileDescriptorName= (`ingest`, `control`);
    /// a single unnamed one (or one named after its unit) is the ingest socket. The rest are
    /// returned as unused, for the caller to log and close.
    public static func assign(_ passed: [Passed]) -> (ingest: CInt?, control: CInt?, unused: [Passed]) {
        var ingest: CInt?
        var control: CInt?
        var unused: [Passed] = []
        for p in passed {
            switch p.name {
            case "ingest" where ingest == nil: ingest = p.fd
            case "control" where control == nil: control = p.fd
            default: unused.append(p)
            }
        }
        if ingest == nil, control == nil, passed.count == 1 {
            return (passed[0].fd, nil, [])
        }
        return (ingest, control, unused)
    }
}
