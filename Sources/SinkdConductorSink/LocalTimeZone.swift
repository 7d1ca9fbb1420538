import Foundation

/// The local time zone of this process, by name, as a JVM on the same machine finds its default:
/// TZ (a leading ':' dropped; a zoneinfo path made a name), else where /etc/localtime points, else
/// /etc/timezone, else UTC. PostgreSQL takes IANA names and POSIX TZ strings alike.
public enum LocalTimeZone {
    public static func name(
        environment: [String: String], localtime: String = "/etc/localtime", timezoneFile: String = "/etc/timezone"
    ) -> String {
        if var tz = environment["TZ"], !tz.isEmpty {
            if tz.hasPrefix(":") { tz.removeFirst() }
            if let zone = zoneName(fromPath: tz) { return zone }
            if !tz.isEmpty { return tz }
        }
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: localtime),
            let zone = zoneName(fromPath: target)
        {
            return zone
        }
        if let text = try? String(contentsOfFile: timezoneFile, encoding: .utf8) {
            let zone = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !zone.isEmpty { return zone }
        }
        return "UTC"
    }

    /// `/usr/share/zoneinfo/Europe/Paris` (or `../usr/share/zoneinfo/...`) → `Europe/Paris`.
    static func zoneName(fromPath path: String) -> String? {
        guard let range = path.range(of: "zoneinfo/") else { return nil }
        let zone = String(path[range.upperBound...])
        return zone.isEmpty ? nil : zone
    }
}
