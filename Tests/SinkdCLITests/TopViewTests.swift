import Foundation
import Testing
@testable import SinkdCLI
@testable import SinkdControl

/// `sinkd top`'s screen from plain values.
@Suite struct TopViewTests {
    static func sink(
        _ name: String, _ state: String, delivered: UInt64 = 0, retried: UInt64 = 0, dead: UInt64 = 0,
        backlog: UInt64 = 0,
        oldest: Double? = nil, error: String? = nil
    ) -> StatusReport.Sink {
        StatusReport.Sink(
            sink: name, state: state, backlogRecords: backlog, backlogBytes: backlog * 100,
            oldestUndeliveredSeconds: oldest,
            delivered: delivered, retried: retried, deadLettered: dead, inFlight: 0, lastError: error)
    }

    static func report(_ sinks: [StatusReport.Sink], nextSeq: UInt64 = 1, diskFull: Bool = false) -> StatusReport {
        StatusReport(
            version: "0.1.0", uptimeSeconds: 3725, configGeneration: 2, configPath: "/etc/sinkd/sinkd.yaml",
            walSegments: 3, walBytes: 3 << 20,
            walNextSeq: nextSeq, walDiskFullSinceMillis: diskFull ? 1 : nil, ingestConnections: 8, sinks: sinks)
    }

    @Test func ratesAreDeltasPerSecondAndACounterResetCountsFromZero() {
        let before = Self.sink("redis:a", "up", delivered: 1000, retried: 10, dead: 2)
        let after = Self.sink("redis:a", "up", delivered: 3000, retried: 10, dead: 4)
        #expect(
            TopView.rates(previous: before, current: after, seconds: 2)
                == .init(delivered: 1000, retried: 0, deadLettered: 1))
        let reaped = Self.sink("redis:a", "up", delivered: 50)
        #expect(TopView.rates(previous: before, current: reaped, seconds: 1)?.delivered == 50)
        #expect(TopView.rates(previous: nil, current: after, seconds: 1) == nil)
        #expect(
            TopView.ingestRate(
                previous: Self.report([], nextSeq: 100), current: Self.report([], nextSeq: 2100), seconds: 2) == 1000)
    }

    @Test func problemsComeFirstThenTheLargestBacklog() {
        let sinks = [
            Self.sink("a:ok", "up", backlog: 5), Self.sink("b:big", "up", backlog: 500),
            Self.sink("c:down", "down", backlog: 1),
            Self.sink("d:paused", "paused"),
        ]
        #expect(TopView.ordered(sinks).map(\.sink) == ["c:down", "d:paused", "b:big", "a:ok"])
    }

    @Test func theWholeScreenAtEightyColumns() {
        let previous = Self.report(
            [Self.sink("redis:orders", "up", delivered: 100), Self.sink("kafka:audit", "down", retried: 3)], nextSeq: 1)
        let current = Self.report(
            [
                Self.sink("redis:orders", "up", delivered: 1100, backlog: 2, oldest: 0.2),
                Self.sink(
                    "kafka:audit", "down", retried: 5, backlog: 4000, oldest: 62,
                    error: "kafka broker 10.0.0.1:9092: connection refused"),
            ],
            nextSeq: 1001, diskFull: true)
        let lines = TopView.render(
            previous: previous, current: current, seconds: 1, width: 80, height: 24, now: Date(timeIntervalSince1970: 0)
        )
        #expect(lines[0].hasPrefix("sinkd 0.1.0  up 1h2m  config generation 2  "))
        #expect(lines[1] == "ingest 1000/s  connections 8  WAL 3MiB in 3 segments  DISK FULL: records held")
        // 80 columns with an error to show: the dead-letter rate gives way to the error's text.
        #expect(lines[3] == "SINK          STATE    DELIV/S  BACKLOG  OLDEST  RETRY/S  LAST ERROR")
        #expect(lines[4] == "kafka:audit   down           0     4000    1m2s        2  kafka broker 10.0.0.1~")
        #expect(lines[5] == "redis:orders  up          1000        2      0s        0")
        let wide = TopView.render(
            previous: previous, current: current, seconds: 1, width: 120, height: 24,
            now: Date(timeIntervalSince1970: 0))
        #expect(wide[3] == "SINK          STATE    DELIV/S  BACKLOG  OLDEST  RETRY/S  DEAD/S  LAST ERROR")
        #expect(
            wide[4]
                == "kafka:audit   down           0     4000    1m2s        2       0  kafka broker 10.0.0.1:9092: connection refused"
        )
        #expect(lines.last == "q: quit   rates over the last 1.0 s")
        #expect(lines.allSatisfy { $0.count <= 80 })
    }

    /// A narrow terminal drops the least important columns first and never wraps a line.
    @Test func narrowTerminalsDropColumnsAndTruncate() {
        let current = Self.report([
            Self.sink("redis:a-very-long-sink-name-for-orders", "down", backlog: 12, error: "refused")
        ])
        for width in [20, 30, 40, 50, 60, 79, 120] {
            let lines = TopView.render(
                previous: current, current: current, seconds: 1, width: width, height: 24, now: Date())
            #expect(lines.allSatisfy { $0.count <= width }, "width \(width): \(lines)")
            let header = lines[3]
            #expect(header.hasPrefix("SINK") && header.contains("STATE"), "width \(width): \(header)")
            #expect(lines[4].contains("down"), "the state is always shown (width \(width))")
        }
        let forty = TopView.render(previous: current, current: current, seconds: 1, width: 40, height: 24, now: Date())
        #expect(forty[3].contains("DELIV/S") && !forty[3].contains("DEAD/S"), "\(forty[3])")
        #expect(forty[4].hasPrefix("redis:a-very~  down"), "a long name is cut with ~: \(forty[4])")
    }

    @Test func aShortTerminalSaysHowManySinksItCannotShow() {
        let sinks = (0..<30).map { Self.sink("redis:s\($0)", "up") }
        let lines = TopView.render(
            previous: nil, current: Self.report(sinks), seconds: 0, width: 80, height: 12, now: Date())
        #expect(lines.count <= 12)
        #expect(lines.contains { $0.hasPrefix("... ") && $0.contains("more sinks") })
        let plain = TopView.render(
            previous: nil, current: Self.report(sinks), seconds: 0, width: 200, height: .max, now: Date(), plain: true)
        #expect(plain.filter { $0.hasPrefix("redis:s") }.count == 30, "a pipe gets every sink")
        #expect(!plain.contains { $0.hasPrefix("q: quit") })
    }

    /// A broker's error text reaches the screen: control characters (an escape sequence, a
    /// newline) must not drive the terminal or break the layout.
    @Test func controlCharactersInAnErrorAreBlanked() {
        let current = Self.report([Self.sink("http:x", "down", error: "bad\u{1B}[2J\nanswer\u{7}")])
        let lines = TopView.render(previous: nil, current: current, seconds: 0, width: 100, height: 24, now: Date())
        #expect(!lines.joined().unicodeScalars.contains { $0.value < 0x20 }, "\(lines)")
        #expect(lines[4].contains("bad [2J answer"))
    }
}
