import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Decides, tick by tick, whether sinkd may tell systemd it is alive: only while every ingest
/// event loop runs the probe it was given at the previous tick and the WAL writer is not stuck in
/// one write or fsync. I/O-free; times are CLOCK_MONOTONIC nanoseconds.
public struct WatchdogState: Sendable, Equatable {
    public enum Verdict: Sendable, Equatable {
        case alive
        case stalled(String)
    }

    /// A stall longer than this stops the pings (half the watchdog interval: the ping period).
    public let thresholdNanos: UInt64
    /// Per event loop: when the outstanding probe was sent (nil: answered).
    public private(set) var probeSent: [UInt64?]

    public init(loops: Int, thresholdNanos: UInt64) {
        self.thresholdNanos = thresholdNanos
        probeSent = Array(repeating: nil, count: loops)
    }

    public mutating func probeAnswered(loop: Int) {
        probeSent[loop] = nil
    }

    /// The verdict at `now`, and the loops to send a new probe to (those whose last one was answered).
    public mutating func tick(now: UInt64, walWritingSince: UInt64) -> (Verdict, probe: [Int]) {
        var verdict = Verdict.alive
        for (loop, sent) in probeSent.enumerated() {
            if let sent, now &- sent > thresholdNanos {
                verdict = .stalled("ingest event loop \(loop) has not run for \(Self.seconds(now &- sent)) s")
                break
            }
        }
        if verdict == .alive, walWritingSince != 0, now &- walWritingSince > thresholdNanos {
            verdict = .stalled(
                "the WAL writer has been in one write or fsync for \(Self.seconds(now &- walWritingSince)) s")
        }
        var probe: [Int] = []
        for loop in probeSent.indices where probeSent[loop] == nil {
            probeSent[loop] = now
            probe.append(loop)
        }
        return (verdict, probe)
    }

    static func seconds(_ nanos: UInt64) -> String {
        let tenths = nanos / 100_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// Sends WATCHDOG=1 every half interval while `WatchdogState` says sinkd is alive; logs once when
/// it stops pinging and once when it resumes.
public final class WatchdogService: Service, Sendable {
    let interval: Duration
    let loops: [any EventLoop]
    let walWritingSince: @Sendable () -> UInt64
    let now: @Sendable () -> UInt64
    let notifier: SystemdNotifier
    let logger: Logger

    public init(
        interval: Duration, loops: [any EventLoop], walWritingSince: @escaping @Sendable () -> UInt64,
        now: @escaping @Sendable () -> UInt64, notifier: SystemdNotifier, logger: Logger
    ) {
        self.interval = interval
        self.loops = loops
        self.walWritingSince = walWritingSince
        self.now = now
        self.notifier = notifier
        self.logger = logger
    }

    public func run() async throws {
        let period = interval / 2
        let state = NIOLockedValueBox(
            WatchdogState(
                loops: loops.count,
                thresholdNanos: UInt64(period.components.seconds) * 1_000_000_000
                    + UInt64(period.components.attoseconds / 1_000_000_000)))
        var stalled: String?
        logger.info("systemd watchdog enabled", metadata: ["interval": "\(interval)", "ping_every": "\(period)"])
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            let t = now()
            let since = walWritingSince()
            let (verdict, probe) = state.withLockedValue { $0.tick(now: t, walWritingSince: since) }
            for index in probe {
                loops[index].execute { state.withLockedValue { $0.probeAnswered(loop: index) } }
            }
            switch verdict {
            case .alive:
                notifier.watchdogPing()
                if stalled != nil {
                    logger.notice("progress resumed; pinging the systemd watchdog again")
                    stalled = nil
                }
            case .stalled(let reason):
                if stalled == nil {
                    logger.error("not pinging the systemd watchdog: sinkd is stuck", metadata: ["error": "\(reason)"])
                    stalled = reason
                }
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: period) }
            } catch {
                return
            }
        }
    }
}
