/// Human-readable durations and sizes as they appear in sinkd's configuration.
///
/// Durations: one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h` ("250ms", "30s",
/// "1h30m"), or `0`. Sizes: a plain number of bytes or `<integer><unit>` with units `B`, `KiB`,
/// `MiB`, `GiB`, `TiB` (powers of 1024) and `KB`, `MB`, `GB`, `TB` (powers of 1000).
public enum Units {
    public static func parseDuration(_ text: String) -> Duration? {
        let s = text.trimmingWhitespace()
        if s == "0" { return .zero }
        var total: Int64 = 0  // milliseconds
        var index = s.startIndex
        var sawPart = false
        while index < s.endIndex {
            var digits = ""
            while index < s.endIndex, s[index].isASCII, s[index].isNumber {
                digits.append(s[index])
                index = s.index(after: index)
            }
            var unit = ""
            while index < s.endIndex, s[index].isASCII, s[index].isLetter {
                unit.append(s[index])
                index = s.index(after: index)
            }
            guard !digits.isEmpty, digits.count <= 12, let value = Int64(digits) else { return nil }
            let factor: Int64
            switch unit {
            case "ms": factor = 1
            case "s": factor = 1000
            case "m": factor = 60_000
            case "h": factor = 3_600_000
            default: return nil
            }
            let (product, overflow) = value.multipliedReportingOverflow(by: factor)
            guard !overflow else { return nil }
            let (sum, overflow2) = total.addingReportingOverflow(product)
            guard !overflow2 else { return nil }
            total = sum
            sawPart = true
        }
        return sawPart ? .milliseconds(total) : nil
    }

    public static func parseSize(_ text: String) -> Int? {
        let s = text.trimmingWhitespace()
        var digits = Substring("")
        var rest = Substring(s)
        while let c = rest.first, c.isASCII, c.isNumber {
            digits.append(c)
            rest = rest.dropFirst()
        }
        guard !digits.isEmpty, digits.count <= 19, let value = Int(digits) else { return nil }
        let factor: Int
        switch rest.trimmingWhitespace() {
        case "", "B": factor = 1
        case "KiB": factor = 1 << 10
        case "MiB": factor = 1 << 20
        case "GiB": factor = 1 << 30
        case "TiB": factor = 1 << 40
        case "KB", "kB": factor = 1_000
        case "MB": factor = 1_000_000
        case "GB": factor = 1_000_000_000
        case "TB": factor = 1_000_000_000_000
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: factor)
        return overflow ? nil : product
    }

    /// "64MiB", "1.5GiB", "512B": the shortest exact-enough form for summaries and errors.
    public static func formatSize(_ bytes: Int) -> String {
        let units: [(String, Int)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        for (name, factor) in units where bytes >= factor {
            if bytes % factor == 0 { return "\(bytes / factor)\(name)" }
            let tenths = (bytes * 10) / factor
            return "\(tenths / 10).\(tenths % 10)\(name)"
        }
        return "\(bytes)B"
    }

    /// "250ms", "30s", "10m", "24h", "1h30m", "0s".
    public static func formatDuration(_ duration: Duration) -> String {
        let ms = duration.milliseconds
        if ms == 0 { return "0s" }
        if ms % 1000 != 0 { return "\(ms)ms" }
        var seconds = ms / 1000
        var out = ""
        if seconds >= 3600 {
            out += "\(seconds / 3600)h"
            seconds %= 3600
        }
        if seconds >= 60 {
            out += "\(seconds / 60)m"
            seconds %= 60
        }
        if seconds > 0 { out += "\(seconds)s" }
        return out
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> Substring {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s = s.dropFirst() }
        while let c = s.last, c.isWhitespace { s = s.dropLast() }
        return s
    }
}
