import Foundation
import SinkdControl
import SinkdCore

/// What `sinkd top` draws: I/O-free, from two status reports a known time apart and the
/// terminal's size. Tested with plain values (TopViewTests); the command only fetches and paints.
struct TopView {
    struct Rates: Equatable, Sendable {
        var delivered: Double
        var retried: Double
        var deadLettered: Double
    }

    /// Per-second rates of a sink's counters between two reports. A counter that went down was
    /// reset (an idle pipeline reaped and started again): its new value counts from zero.
    static func rates(previous: StatusReport.Sink?, current: StatusReport.Sink, seconds: Double) -> Rates? {
        guard let previous, seconds > 0 else { return nil }
        func rate(_ before: UInt64, _ now: UInt64) -> Double { Double(now >= before ? now - before : now) / seconds }
        return Rates(
            delivered: rate(previous.delivered, current.delivered), retried: rate(previous.retried, current.retried),
            deadLettered: rate(previous.deadLettered, current.deadLettered))
    }

    /// Accepted records per second: the WAL's next seq advances by one per accepted record.
    static func ingestRate(previous: StatusReport?, current: StatusReport, seconds: Double) -> Double? {
        guard let previous, seconds > 0, current.walNextSeq >= previous.walNextSeq else { return nil }
        return Double(current.walNextSeq - previous.walNextSeq) / seconds
    }

    /// Problems first: down, then paused, then the rest; within each, the largest backlog first.
    static func ordered(_ sinks: [StatusReport.Sink]) -> [StatusReport.Sink] {
        func rank(_ state: String) -> Int {
            switch state {
            case "down": 0
            case "paused": 1
            case "waiting": 2
            default: 3
            }
        }
        return sinks.sorted { a, b in
            (rank(a.state), b.backlogRecords, a.sink) < (rank(b.state), a.backlogRecords, b.sink)
        }
    }

    struct Column: Sendable {
        var title: String
        var width: Int
        var rightAligned: Bool
        /// Lower goes first when the terminal is too narrow; SINK and STATE are never dropped.
        var priority: Int
        var cell: @Sendable (StatusReport.Sink, Rates?) -> String
    }

    static let columns: [Column] = [
        Column(title: "SINK", width: 0, rightAligned: false, priority: 100) { s, _ in s.sink },
        Column(title: "STATE", width: 7, rightAligned: false, priority: 99) { s, _ in s.state },
        Column(title: "DELIV/S", width: 7, rightAligned: true, priority: 90) { _, r in
            r.map { number($0.delivered) } ?? "-"
        },
        Column(title: "BACKLOG", width: 7, rightAligned: true, priority: 80) { s, _ in number(Double(s.backlogRecords))
        },
        Column(title: "OLDEST", width: 6, rightAligned: true, priority: 70) { s, _ in
            s.oldestUndeliveredSeconds.map(StatusTable.age) ?? "-"
        },
        Column(title: "RETRY/S", width: 7, rightAligned: true, priority: 60) { _, r in
            r.map { number($0.retried) } ?? "-"
        },
        Column(title: "DEAD/S", width: 6, rightAligned: true, priority: 50) { _, r in
            r.map { number($0.deadLettered) } ?? "-"
        },
    ]

    /// The screen: at most `height` lines, none wider than `width` characters. `plain`: for a pipe
    /// (no key hint; every sink, whatever the height).
    static func render(
        previous: StatusReport?, current: StatusReport, seconds: Double, width: Int, height: Int, now: Date,
        plain: Bool = false
    ) -> [String] {
        let width = max(width, 20)
        let clock = Self.clock(now)
        var lines: [String] = []
        lines.append(
            "sinkd \(current.version)  up \(StatusTable.age(current.uptimeSeconds))  config generation \(current.configGeneration)  \(clock)"
        )
        let ingest = ingestRate(previous: previous, current: current, seconds: seconds).map { number($0) + "/s" } ?? "-"
        var wal =
            "ingest \(ingest)  connections \(current.ingestConnections)  WAL \(Units.formatSize(current.walBytes)) in \(current.walSegments) segments"
        if current.walDiskFullSinceMillis != nil { wal += "  DISK FULL: records held" }
        if let failures = current.walWriteFailures, failures > 0 { wal += "  \(failures) write failures" }
        lines.append(wal)
        lines.append("")

        // Columns that fit: drop the least important until the fixed ones leave the SINK column
        // at least 12 characters; LAST ERROR takes what is left, if 10 or more.
        let sinks = ordered(current.sinks)
        let before = Dictionary(previous?.sinks.map { ($0.sink, $0) } ?? [], uniquingKeysWith: { a, _ in a })
        let nameWidth = min(max(sinks.map(\.sink.count).max() ?? 4, 4), 40)
        var shown = columns
        func fixedWidth(_ columns: [Column]) -> Int { columns.dropFirst().reduce(0) { $0 + $1.width + 2 } }
        while fixedWidth(shown) + 12 > width,
            let drop = shown.filter({ $0.priority < 99 }).min(by: { $0.priority < $1.priority })
        {
            shown.removeAll { $0.title == drop.title }
        }
        // A last error needs room to be read: the rates of retries and dead letters give way first.
        if sinks.contains(where: { $0.lastError != nil }) {
            while width - min(nameWidth, width - fixedWidth(shown)) - fixedWidth(shown) - 2 < 20,
                let drop = shown.filter({ $0.priority < 70 }).min(by: { $0.priority < $1.priority })
            {
                shown.removeAll { $0.title == drop.title }
            }
        }
        let sinkWidth = max(4, min(nameWidth, width - fixedWidth(shown)))
        let errorWidth = width - sinkWidth - fixedWidth(shown) - 2
        let showError = errorWidth >= 10

        func row(_ cells: [String], error: String?) -> String {
            var out = ""
            for (column, cell) in zip(shown, cells) {
                let w = column.title == "SINK" ? sinkWidth : column.width
                if !out.isEmpty { out += "  " }
                out += fit(cell, w, right: column.rightAligned)
            }
            if showError, let error { out += "  " + fit(error, errorWidth, right: false) }
            return trimmed(out, width)
        }
        lines.append(row(shown.map(\.title), error: "LAST ERROR"))
        let room = plain ? Int.max : max(height - lines.count - 2, 1)
        for (index, s) in sinks.enumerated() {
            if index >= room - 1, sinks.count > room {
                lines.append("... \(sinks.count - index) more sinks (a taller terminal shows them)")
                break
            }
            let rates = Self.rates(previous: before[s.sink], current: s, seconds: seconds)
            lines.append(row(shown.map { $0.cell(s, rates) }, error: s.lastError.map { oneLine($0) } ?? ""))
        }
        if sinks.isEmpty { lines.append("(no sink has records yet)") }
        if !plain {
            lines.append("")
            lines.append(trimmed("q: quit   rates over the last \(String(format: "%.1f", seconds)) s", width))
        }
        return lines.map { trimmed($0, width) }
    }

    static func number(_ value: Double) -> String {
        if value >= 10_000_000 { return String(format: "%.0fM", value / 1_000_000) }
        if value >= 100_000 { return String(format: "%.0fk", value / 1000) }
        if value >= 100 || value == value.rounded() { return String(Int(value.rounded())) }
        return String(format: "%.1f", value)
    }

    /// A cell of exactly `width` characters: padded, or cut with "~" at its end.
    static func fit(_ text: String, _ width: Int, right: Bool) -> String {
        guard width > 0 else { return "" }
        if text.count > width { return String(text.prefix(width - 1)) + "~" }
        let pad = String(repeating: " ", count: width - text.count)
        return right ? pad + text : text + pad
    }

    static func trimmed(_ line: String, _ width: Int) -> String {
        var line = line
        while line.last == " " { line.removeLast() }
        return line.count > width ? String(line.prefix(width)) : line
    }

    /// Control characters (a newline in an error, an escape sequence from a hostile broker's
    /// answer) would break the screen or drive the terminal: shown as spaces.
    static func oneLine(_ text: String) -> String {
        String(
            String.UnicodeScalarView(text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : $0 }))
    }

    static func clock(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        localtime_r(&t, &parts)
        return String(format: "%02d:%02d:%02d", parts.tm_hour, parts.tm_min, parts.tm_sec)
    }
}
