import Foundation
import SinkdCore
import Testing

/// Config/sinkd.yaml says "every value shown is the default": these tests hold it to that, so a
/// default changed in the code (or in the file) without the other fails here (issue 31).
@Suite struct ShippedDefaultsTests {
    static let text =
        (try? String(contentsOfFile: ShippedPathsTests.root + "/Config/sinkd.yaml", encoding: .utf8)) ?? ""

    static func parse(_ yaml: String) throws(ConfigErrors) -> SinkdConfig {
        try ConfigLoader.parse(yaml: yaml, file: "/etc/sinkd/sinkd.yaml", environment: [:], workingDirectory: "/")
    }

    /// The sections that are not commented out equal the code's defaults.
    @Test func theShippedSectionsAreTheCodesDefaults() throws {
        let shipped = try Self.parse(Self.text)
        let code = SinkdConfig()
        #expect(shipped.ingest == code.ingest)
        #expect(shipped.control == code.control)
        #expect(shipped.wal == code.wal)
        #expect(shipped.delivery == code.delivery)
        #expect(shipped.log == code.log)
        #expect(shipped.metrics == code.metrics)
        #expect(shipped.sinks.file == FileSinkConfig())
        #expect(shipped.sinks.configuredFamilies == [.file], "the other families are commented out")
    }

    /// Each commented-out family section, uncommented, shows defaults: leaving any one key out
    /// gives the same configuration. Keys that cannot be left out (a broker's address) are
    /// examples by necessity, and so are these sections, with everything in them: `tls` and
    /// `sasl` (present means enabled), http's `endpoints` (none by default) and conductor's
    /// `postgres` (its keys override the URL's parts only when given).
    @Test func everyKeyShownInAFamilySectionIsItsDefault() throws {
        let examples: Set<String> = ["tls", "sasl", "endpoints", "postgres"]
        var checked = 0
        var differing: [String] = []
        for (family, block) in Self.familyBlocks() {
            let full = try Self.parse("sinks:\n" + block.joined(separator: "\n"))
            var index = 1
            while index < block.count {
                let line = block[index]
                let key = line.trimmingCharacters(in: .whitespaces).split(separator: ":").first.map(String.init) ?? ""
                let indent = line.prefix { $0 == " " }.count
                var end = index + 1
                while end < block.count, block[end].prefix(while: { $0 == " " }).count > indent { end += 1 }
                defer { index = examples.contains(key) ? end : index + 1 }
                guard !examples.contains(key) else { continue }
                let without = Array(block[..<index] + block[end...])
                guard let config = try? Self.parse("sinks:\n" + without.joined(separator: "\n")) else { continue }  // required
                checked += 1
                if config.sinks != full.sinks { differing.append("\(family).\(key)") }
            }
        }
        #expect(differing == [], "shown in Config/sinkd.yaml but not the code's default: \(differing)")
        #expect(checked > 40, "the family sections were found and walked (\(checked) keys)")
    }

    /// The commented-out `  # family:` sections of `sinks:`, uncommented, each as its lines.
    static func familyBlocks() -> [(String, [String])] {
        var blocks: [(String, [String])] = []
        var inSinks = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if raw == "sinks:" { inSinks = true; continue }
            guard inSinks, raw.hasPrefix("  #") else { continue }
            var line = "  " + raw.dropFirst(4)  // "  # x" -> "  x"
            if let comment = line.range(of: " #") { line = String(line[..<comment.lowerBound]) }
            // Secret references are examples; resolving them needs files and systemd credentials.
            while let start = line.range(of: "${"), let end = line[start.upperBound...].firstIndex(of: "}") {
                line.replaceSubrange(start.lowerBound...end, with: "example")
            }
            while line.hasSuffix(" ") { line.removeLast() }
            if raw.hasPrefix("  # ") && !raw.hasPrefix("  #  "), line.hasSuffix(":") {
                blocks.append((String(line.dropFirst(2).dropLast()), [line]))
            } else if !blocks.isEmpty, !line.trimmingCharacters(in: .whitespaces).isEmpty {
                blocks[blocks.count - 1].1.append(line)
            }
        }
        return blocks
    }
}
