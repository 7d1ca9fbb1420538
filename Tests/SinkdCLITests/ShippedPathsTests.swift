import Foundation
import Testing
import SinkdCore

/// Under the unit's `ProtectSystem=strict` only the paths it names (StateDirectory=,
/// RuntimeDirectory=, ReadWritePaths=, ...) are writable: every path the shipped configuration (and
/// the embedded defaults) makes sinkd write must lie under one of them. The paths are found by
/// walking the loaded configuration, so a key added later is checked without editing this test.
/// (Issue 19: the file family's outbox /var/lib/sinkd/outbox was read-only, "sink is down" forever.)
@Suite struct ShippedPathsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..")
        .standardized.path

    /// The writable prefixes the installed unit grants, read from its directives.
    static func writablePaths() throws -> [String] {
        let unit = try String(contentsOfFile: root + "/systemd/sinkd.service", encoding: .utf8)
        var paths: [String] = []
        let prefixes = [
            "StateDirectory": "/var/lib/", "RuntimeDirectory": "/run/", "CacheDirectory": "/var/cache/",
            "LogsDirectory": "/var/log/", "ReadWritePaths": "",
        ]
        for line in unit.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let prefix = prefixes[parts[0]] else { continue }
            paths += parts[1].split(separator: " ").map {
                prefix + $0.trimmingCharacters(in: CharacterSet(charactersIn: "-+"))
            }
        }
        return paths
    }

    /// Every absolute path in a configuration value, with the key path it was found at.
    static func absolutePaths(in value: Any, at key: String = "") -> [(key: String, path: String)] {
        if let string = value as? String { return string.hasPrefix("/") ? [(key, string)] : [] }
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            return mirror.children.first.map { absolutePaths(in: $0.value, at: key) } ?? []
        }
        if mirror.displayStyle == .dictionary {
            return mirror.children.flatMap { child -> [(key: String, path: String)] in
                let pair = Mirror(reflecting: child.value).children.map(\.value)
                return pair.count == 2 ? absolutePaths(in: pair[1], at: "\(key).\(pair[0])") : []
            }
        }
        return mirror.children.enumerated().flatMap { index, child in
            absolutePaths(in: child.value, at: key + "." + (child.label ?? "\(index)"))
        }
    }

    /// Paths sinkd only reads (the configuration file itself, CA bundles, credentials) live under
    /// /etc or /usr, which stay readable; anything else must be writable.
    static func outside(_ paths: [(key: String, path: String)], _ writable: [String]) -> [String] {
        paths.filter { entry in
            !(entry.path.hasPrefix("/etc/") || entry.path.hasPrefix("/usr/"))
                && !writable.contains { entry.path == $0 || entry.path.hasPrefix($0 + "/") }
        }.map { "\($0.key) = \($0.path)" }
    }

    @Test func everyPathTheShippedConfigurationWritesIsWritableUnderTheUnit() throws {
        let writable = try Self.writablePaths()
        #expect(writable.contains("/var/lib/sinkd/wal"))
        // Loaded from where the package installs it (the path is one of the values walked).
        let shipped = try ConfigLoader.parse(
            yaml: String(contentsOfFile: Self.root + "/Config/sinkd.yaml", encoding: .utf8),
            file: "/etc/sinkd/sinkd.yaml", environment: [:], workingDirectory: "/")
        let paths = Self.absolutePaths(in: shipped)
        // The walk finds them all (the sockets, the WAL, the dead letters, the outbox).
        #expect(paths.count >= 5, "\(paths)")
        #expect(
            Self.outside(paths, writable) == [],
            "read-only under ProtectSystem=strict: add them to StateDirectory= (or move them)")
        // The embedded defaults too: a configuration that leaves a key out gets them.
        #expect(Self.outside(Self.absolutePaths(in: SinkdConfig()), writable) == [])
    }

    /// The check can fail: a path outside the unit's writable set is found wherever it is nested.
    @Test func aPathOutsideTheWritableSetIsFound() throws {
        var config = try ConfigLoader.parse(
            yaml: String(contentsOfFile: Self.root + "/Config/sinkd.yaml", encoding: .utf8),
            file: "/etc/sinkd/sinkd.yaml", environment: [:], workingDirectory: "/")
        config.sinks.file?.directory = "/var/spool/sinkd"
        let outside = Self.outside(Self.absolutePaths(in: config), try Self.writablePaths())
        #expect(outside.count == 1 && outside[0].hasSuffix("file.directory = /var/spool/sinkd"), "\(outside)")
    }
}
