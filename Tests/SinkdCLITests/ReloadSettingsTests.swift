import SinkdCore
import Testing
@testable import SinkdCLI

/// Which settings a reload applies and which keep their running value (issue 31: one list, so a
/// restart-only setting cannot be warned about and applied anyway, or kept without a warning).
@Suite struct ReloadSettingsTests {
    /// A change to each restart-only setting, by its key. A key added to
    /// `ReloadCoordinator.restartOnly` without a change here fails `everyRestartOnlyKeyIsTested`.
    static let changes: [String: @Sendable (inout SinkdConfig) -> Void] = [
        "ingest": { $0.ingest.socket = "/elsewhere/ingest.sock" },
        "control": { $0.control.socket = "/elsewhere/control.sock" },
        "wal": { $0.wal.directory = "/elsewhere/wal" },
        "metrics": { $0.metrics.listen = "127.0.0.1:9999" },
        "log.format": { $0.log.format = .json },
        "delivery.dedupe": { $0.delivery.dedupeWindow = .seconds(5) },
        "delivery.dead_letter.directory": { $0.delivery.deadLetterDirectory = "/elsewhere/dead-letter" },
    ]

    @Test func everyRestartOnlyKeyIsTested() {
        #expect(Set(ReloadCoordinator.restartOnly.map(\.key)) == Set(Self.changes.keys))
    }

    @Test func eachRestartOnlyChangeIsNamedAndKept() {
        let running = SinkdConfig()
        for (key, change) in Self.changes {
            var reloaded = running
            change(&reloaded)
            reloaded.delivery.retry.maxAttempts = 7  // reloadable: applied
            reloaded.log.level = .debug  // reloadable: applied
            #expect(ReloadCoordinator.restartOnlyChanges(from: running, to: reloaded) == [key], "\(key)")
            var effective = reloaded
            ReloadCoordinator.keepRestartOnly(from: running, in: &effective)
            var expected = running
            expected.delivery.retry.maxAttempts = 7
            expected.log.level = .debug
            #expect(effective == expected, "\(key): the running value is kept, the reloadable changes applied")
        }
    }

    @Test func theDedupeMaximumIsRestartOnlyToo() {
        var reloaded = SinkdConfig()
        reloaded.delivery.dedupeMaxEntries = 10
        #expect(ReloadCoordinator.restartOnlyChanges(from: SinkdConfig(), to: reloaded) == ["delivery.dedupe"])
    }

    @Test func reloadableChangesNameNothing() {
        var reloaded = SinkdConfig()
        reloaded.delivery.retry.initialBackoff = .seconds(1)
        reloaded.delivery.maxSinks = 10
        reloaded.log.level = .error
        #expect(ReloadCoordinator.restartOnlyChanges(from: SinkdConfig(), to: reloaded).isEmpty)
    }
}
