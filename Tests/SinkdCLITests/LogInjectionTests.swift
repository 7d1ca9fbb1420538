import Testing
import SinkdCore
import SinkdSystemd
@testable import SinkdCLI
import SinkdTestSupport

/// Issue 18, item 8: text from outside (an HTTP error body, a record id) can never start a log
/// line of its own, in logfmt, JSON or the journal, whatever control characters it holds.
@Suite(.blockingThreads) struct LogInjectionTests {
    static let controls: [Unicode.Scalar] =
        (0..<0x20).map { Unicode.Scalar(UInt8($0)) } + [
            Unicode.Scalar(0x7F), Unicode.Scalar(0x85), "\u{2028}", "\u{2029}",
        ]

    @Test func logfmtEscapesEveryControlCharacter() {
        for c in Self.controls {
            let value = StderrLogHandler.logfmtValue("a\(Character(c))b")
            #expect(
                !value.unicodeScalars.contains(where: LogText.isControl),
                "U+\(String(c.value, radix: 16)) left as is: \(value.debugDescription)")
            #expect(value.hasPrefix("\"") && value.hasSuffix("\""), "quoted")
        }
    }

    @Test func aForgedLineFromAnHTTPBodyStaysInsideItsValue() {
        let body = "nope\r\nts=2026-01-01T00:00:00.000Z level=critical msg=FORGED\rts=x level=critical msg=FORGED2"
        let line = "ts=t level=error msg=m error=" + StderrLogHandler.logfmtValue("HTTP 400: " + body)
        #expect(!line.contains("\n") && !line.contains("\r"))
        #expect(
            line.hasPrefix(#"ts=t level=error msg=m error="HTTP 400: nope"#) && line.hasSuffix(#"msg=FORGED2""#),
            "the forged fields are inside the one quoted value")
        #expect(line.contains(#"nope\r\nts=2026-01-01T00:00:00.000Z level=critical msg=FORGED\rts=x"#))
    }

    @Test func jsonEscapesC0AndDEL() {
        for c in Self.controls where c.value < 0x80 {
            var out: [UInt8] = []
            JSONText.appendString("a\(Character(c))b", to: &out)
            #expect(!out.contains(where: { $0 < 0x20 || $0 == 0x7F }), "byte \(c.value) left raw")
        }
    }

    @Test func journalFieldsCarryNoControlCharacters() {
        for c in Self.controls {
            let text = LogText.escapingControls("x\(Character(c))y")
            #expect(!text.unicodeScalars.contains(where: LogText.isControl))
        }
        #expect(LogText.escapingControls("plain text, unchanged") == "plain text, unchanged")
        // Invalid UTF-8 from a remote arrives as U+FFFD (Swift strings are valid UTF-8).
        let fromRemote = String(decoding: [0x66, 0xFF, 0xC3, 0x0A, 0x67], as: UTF8.self)
        #expect(LogText.escapingControls(fromRemote) == "f\u{FFFD}\u{FFFD}\\ng")
    }
}
