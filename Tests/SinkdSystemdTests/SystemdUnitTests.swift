import Logging
import Testing
@testable import SinkdSystemd

@Suite struct WatchdogStateTests {
    static let second: UInt64 = 1_000_000_000

    @Test func pingsWhileLoopsAnswerAndTheWriterIsIdle() {
        var w = WatchdogState(loops: 2, thresholdNanos: 5 * Self.second)
        var (verdict, probe) = w.tick(now: 100 * Self.second, walWritingSince: 0)
        #expect(verdict == .alive)
        #expect(probe == [0, 1])
        w.probeAnswered(loop: 0)
        w.probeAnswered(loop: 1)
        (verdict, probe) = w.tick(now: 105 * Self.second, walWritingSince: 104 * Self.second)
        #expect(verdict == .alive, "a write in progress for 1 s is fine")
        #expect(probe == [0, 1])
    }

    @Test func aWedgedLoopStopsThePingsUntilItRunsAgain() {
        var w = WatchdogState(loops: 2, thresholdNanos: 5 * Self.second)
        _ = w.tick(now: 0, walWritingSince: 0)
        w.probeAnswered(loop: 0)  // loop 1 never runs its probe
        var (verdict, probe) = w.tick(now: 4 * Self.second, walWritingSince: 0)
        #expect(verdict == .alive, "not late yet")
        #expect(probe == [0], "no second probe while one is outstanding")
        (verdict, probe) = w.tick(now: 6 * Self.second, walWritingSince: 0)
        #expect(verdict == .stalled("ingest event loop 1 has not run for 6.0 s"))
        w.probeAnswered(loop: 1)
        w.probeAnswered(loop: 0)
        (verdict, probe) = w.tick(now: 7 * Self.second, walWritingSince: 0)
        #expect(verdict == .alive)
        #expect(probe == [0, 1])
    }

    @Test func aStuckFsyncStopsThePings() {
        var w = WatchdogState(loops: 1, thresholdNanos: 5 * Self.second)
        _ = w.tick(now: 10 * Self.second, walWritingSince: 0)
        w.probeAnswered(loop: 0)
        let (verdict, _) = w.tick(now: 20 * Self.second, walWritingSince: 12 * Self.second)
        #expect(verdict == .stalled("the WAL writer has been in one write or fsync for 8.0 s"))
    }
}

@Suite struct JournalFieldTests {
    @Test func metadataKeysBecomeJournalFields() {
        #expect(JournalLogHandler.fieldName("sink") == "SINKD_SINK")
        #expect(JournalLogHandler.fieldName("id") == "SINKD_MESSAGE_ID")
        #expect(JournalLogHandler.fieldName("seq") == "SINKD_SEQ")
        #expect(JournalLogHandler.fieldName("workflow_id") == "SINKD_WORKFLOW_ID")
        #expect(JournalLogHandler.fieldName("error") == "SINKD_ERROR")
        #expect(JournalLogHandler.fieldName("max_connections") == "SINKD_MAX_CONNECTIONS")
        #expect(JournalLogHandler.fieldName("dead-letter.dir") == "SINKD_DEAD_LETTER_DIR")
        #expect(JournalLogHandler.fieldName("é") == "SINKD__")
    }

    /// `journalctl -u sinkd` shows MESSAGE alone: it must say which sink and why (a reload's
    /// rejection read "reload rejected: invalid configuration" with the reason only in SINKD_ERROR).
    @Test func theMessageCarriesItsSinkAndItsError() {
        #expect(
            JournalLogHandler.messageText("sink is down", ["sink": "http:audit", "error": "connection refused"])
                == "http:audit: sink is down: connection refused")
        #expect(
            JournalLogHandler.messageText(
                "reload rejected", ["error": "sinkd.yaml:3:5: wal.segment_size: expected a size"])
                == "reload rejected: sinkd.yaml:3:5: wal.segment_size: expected a size")
        #expect(JournalLogHandler.messageText("sinkd started", ["generation": "1"]) == "sinkd started")
    }

    @Test func levelsMapToSyslogPriorities() {
        #expect(Logger.Level.allCases.map(JournalLogHandler.priority) == [7, 7, 6, 5, 4, 3, 2])
    }

    @Test func theLevelControlIsSharedAndReloadable() {
        let control = LogLevelControl(.info)
        var handler = JournalLogHandler(level: control)
        #expect(handler.logLevel == .info)
        control.level = .debug
        #expect(handler.logLevel == .debug)
        handler.logLevel = .error
        control.level = .trace
        #expect(handler.logLevel == .error, "a logger's own level wins")
    }

    @Test func journalStreamMustMatchStderr() {
        #expect(!JournalStream.stderrIsJournal(environment: [:]))
        #expect(!JournalStream.stderrIsJournal(environment: ["JOURNAL_STREAM": "garbage"]))
        #expect(!JournalStream.stderrIsJournal(environment: ["JOURNAL_STREAM": "1:1"]))
    }
}

@Suite struct ListenFDsTests {
    typealias P = ListenFDs.Passed

    @Test func socketsAreAssignedByName() {
        let both = ListenFDs.assign([P(fd: 3, name: "control"), P(fd: 4, name: "ingest")])
        #expect(both.ingest == 4)
        #expect(both.control == 3)
        #expect(both.unused.isEmpty)
        let single = ListenFDs.assign([P(fd: 3, name: "sinkd.socket")])
        #expect(single.ingest == 3, "one socket with the unit's default name is the ingest socket")
        let extra = ListenFDs.assign([P(fd: 3, name: "ingest"), P(fd: 4, name: "metrics")])
        #expect(extra.ingest == 3)
        #expect(extra.unused == [P(fd: 4, name: "metrics")])
        #expect(ListenFDs.assign([]).ingest == nil)
    }
}
