import Yams

/// Collects every configuration error of one load, so that a user sees all of them at once.
final class ConfigDiagnostics {
    let file: String
    let secrets: SecretResolver
    private(set) var errors: [ConfigError] = []
    /// Values secret references resolved to (SinkdConfig.secretValues).
    var secretValues: [String] = []

    init(file: String, secrets: SecretResolver) {
        self.file = file
        self.secrets = secrets
    }

    func report(_ keyPath: String, at mark: Mark?, _ message: String) {
        errors.append(
            ConfigError(file: file, line: mark?.line, column: mark?.column, keyPath: keyPath, message: message))
    }
}

/// A YAML mapping being read key by key. Reading a key marks it known; `finish()` reports the keys
/// nobody asked for, so that a typo is an error instead of a silently ignored setting.
final class ConfigSection {
    let path: String
    let mark: Mark?
    let diagnostics: ConfigDiagnostics
    private var entries: [(key: String, keyMark: Mark?, value: Node)] = []
    private var known: [String] = []

    /// `node` nil (absent) or YAML null gives an empty section whose reads return their defaults.
    init(_ node: Node?, path: String, diagnostics: ConfigDiagnostics) {
        self.path = path
        self.mark = node?.mark
        self.diagnostics = diagnostics
        guard let node, !node.isNull else { return }
        guard let mapping = node.mapping else {
            diagnostics.report(path, at: node.mark, "expected a mapping of keys to values, got \(node.kindDescription)")
            return
        }
        for (key, value) in mapping {
            entries.append((key.string ?? "\(key)", key.mark, value))
        }
    }

    var keys: [String] { entries.map(\.key) }

    func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The raw node under `key`, marking the key as known.
    func node(_ key: String) -> Node? {
        known.append(key)
        return entries.first(where: { $0.key == key })?.value
    }

    func section(_ key: String) -> ConfigSection {
        ConfigSection(node(key), path: child(key), diagnostics: diagnostics)
    }

    /// Reports unknown keys. Call once, after every known key was read.
    func finish() {
        for entry in entries where !known.contains(entry.key) {
            let list = known.sorted().joined(separator: ", ")
            diagnostics.report(
                child(entry.key), at: entry.keyMark, "unknown key '\(entry.key)' (known keys here: \(list))")
        }
    }

    // MARK: typed scalars

    /// The scalar under `key` with secret references expanded, or nil when absent or null.
    /// `expected` describes the wanted type for the "got a mapping" error.
    func scalar(_ key: String, expected: String) -> (text: String, shown: String, mark: Mark?)? {
        guard let node = node(key), !node.isNull else { return nil }
        return scalar(node, path: child(key), expected: expected)
    }

    func scalar(_ node: Node, path: String, expected: String) -> (text: String, shown: String, mark: Mark?)? {
        guard let scalar = node.scalar else {
            diagnostics.report(path, at: node.mark, "expected \(expected), got \(node.kindDescription)")
            return nil
        }
        switch diagnostics.secrets.resolve(scalar.string) {
        case .success(let resolved):
            diagnostics.secretValues += resolved.secretParts
            // A URL's password never reaches an error message (check-config output, a reload's log).
            let shown = resolved.isSecret ? "the value of \(scalar.string)" : "\"\(Redaction.urls(in: scalar.string))\""
            return (resolved.value, shown, node.mark)
        case .failure(let failure):
            diagnostics.report(path, at: node.mark, failure.message)
            return nil
        }
    }

    func string(_ key: String, default value: String) -> String {
        scalar(key, expected: "a string")?.text ?? value
    }

    /// Parses the scalar under `key` with `parse`; on failure reports "expected DESCRIPTION, got X".
    func value<T>(_ key: String, default value: T, expected: String, _ parse: (String) -> T?) -> T {
        guard let (text, shown, mark) = scalar(key, expected: expected) else { return value }
        guard let parsed = parse(text) else {
            diagnostics.report(child(key), at: mark, "expected \(expected), got \(shown)")
            return value
        }
        return parsed
    }

    /// A server URL of one of `schemes` (ServerURL): the error says what is wrong with it.
    func serverURL(
        _ key: String, default value: String, schemes: [String], hostRequired: Bool = true, expected: String
    ) -> String {
        guard let (text, shown, mark) = scalar(key, expected: expected) else { return value }
        if let problem = ServerURL.problem(text, schemes: schemes, hostRequired: hostRequired) {
            diagnostics.report(child(key), at: mark, "expected \(expected), got \(shown): \(problem)")
            return value
        }
        return text
    }

    /// The largest duration any key takes (a year): beyond it a timer's arithmetic could overflow,
    /// and no setting of sinkd means anything that long.
    public static let maxDuration: Duration = .seconds(365 * 24 * 3600)
    /// The largest size any key takes (1 PiB), so that sums and doublings of sizes never overflow.
    public static let maxSize = 1 << 50

    /// A duration of at most `limit` (`why` says what the limit is, in the error).
    func duration(
        _ key: String, default value: Duration, atMost limit: Duration = maxDuration, why: String = "a year"
    ) -> Duration {
        let parsed = self.value(key, default: value, expected: "a duration like \"30s\"", Units.parseDuration)
        guard parsed <= limit else {
            diagnostics.report(
                child(key), at: node(key)?.mark,
                "must be at most \(Units.formatDuration(limit)) (\(why)), got \(Units.formatDuration(parsed))")
            return value
        }
        return parsed
    }

    func size(_ key: String, default value: Int) -> Int {
        let parsed = self.value(
            key, default: value, expected: "a size like \"64MiB\" or a number of bytes", Units.parseSize)
        guard parsed <= Self.maxSize else {
            diagnostics.report(
                child(key), at: node(key)?.mark,
                "must be at most \(Units.formatSize(Self.maxSize)), got \(parsed) bytes")
            return value
        }
        return parsed
    }

    func int(_ key: String, default value: Int, range: ClosedRange<Int>) -> Int {
        let parsed = self.value(key, default: value, expected: "an integer", { Int($0) })
        return checkRange(key, parsed, range, fallback: value)
    }

    func double(_ key: String, default value: Double, range: ClosedRange<Double>) -> Double {
        let parsed = self.value(key, default: value, expected: "a number", { Double($0) })
        guard range.contains(parsed) else {
            diagnostics.report(
                child(key), at: node(key)?.mark,
                "must be between \(range.lowerBound) and \(range.upperBound), got \(parsed)")
            return value
        }
        return parsed
    }

    func bool(_ key: String, default value: Bool) -> Bool {
        self.value(key, default: value, expected: "true or false") { text in
            switch text.lowercased() {
            case "true": true
            case "false": false
            default: nil
            }
        }
    }

    func choice<E: RawRepresentable & CaseIterable>(_ key: String, default value: E) -> E where E.RawValue == String {
        let names = E.allCases.map(\.rawValue).joined(separator: ", ")
        return self.value(key, default: value, expected: "one of \(names)") { E(rawValue: $0) }
    }

    func checkRange(_ key: String, _ parsed: Int, _ range: ClosedRange<Int>, fallback: Int) -> Int {
        guard range.contains(parsed) else {
            diagnostics.report(
                child(key), at: node(key)?.mark,
                "must be between \(range.lowerBound) and \(range.upperBound), got \(parsed)")
            return fallback
        }
        return parsed
    }

    /// A sequence of scalars, each parsed with `parse`.
    func list<T>(_ key: String, default value: [T], expected: String, _ parse: (String) -> T?) -> [T] {
        guard let node = node(key), !node.isNull else { return value }
        guard let sequence = node.sequence else {
            diagnostics.report(child(key), at: node.mark, "expected a list of \(expected), got \(node.kindDescription)")
            return value
        }
        var out: [T] = []
        for (index, element) in sequence.enumerated() {
            let path = "\(child(key))[\(index)]"
            guard let (text, shown, mark) = scalar(element, path: path, expected: expected) else { continue }
            guard let parsed = parse(text) else {
                diagnostics.report(path, at: mark, "expected \(expected), got \(shown)")
                continue
            }
            out.append(parsed)
        }
        return out
    }

    /// A mapping whose keys are names chosen by the user (HTTP endpoints, headers).
    func namedEntries(_ key: String) -> [(name: String, path: String, node: Node)] {
        guard let node = node(key), !node.isNull else { return [] }
        guard let mapping = node.mapping else {
            diagnostics.report(
                child(key), at: node.mark, "expected a mapping of names to values, got \(node.kindDescription)")
            return []
        }
        return mapping.map { pair in
            let name = pair.key.string ?? "\(pair.key)"
            return (name, "\(child(key)).\(name)", pair.value)
        }
    }
}

extension Node {
    var isNull: Bool {
        guard let scalar else { return false }
        return scalar.style == .plain && (["", "~", "null", "Null", "NULL"].contains(scalar.string))
    }

    var kindDescription: String {
        switch self {
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .scalar(let scalar): "\"\(scalar.string)\""
        case .alias: "an alias"
        }
    }
}
