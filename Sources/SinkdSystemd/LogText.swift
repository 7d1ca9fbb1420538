/// Text that reaches a log line from outside (an error body from a remote server, a record's id)
/// must never make that line look like two, nor carry terminal escapes: every control character
/// (C0, DEL, C1) and the Unicode line and paragraph separators are written as escapes. Swift
/// strings are valid UTF-8, so invalid bytes from a remote arrive here as U+FFFD already.
public enum LogText {
    /// True for the scalars `escapingControls` rewrites.
    public static func isControl(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || (s.value >= 0x7F && s.value <= 0x9F) || s.value == 0x2028 || s.value == 0x2029
    }

    /// `\n`, `\r`, `\t` as such; every other control as `\u{XX}`. `also` names more scalars to
    /// escape with a backslash (logfmt's quote and backslash).
    public static func escapingControls(_ text: String, also: Set<Unicode.Scalar> = []) -> String {
        guard text.unicodeScalars.contains(where: { isControl($0) || also.contains($0) }) else { return text }
        var out = String.UnicodeScalarView()
        for s in text.unicodeScalars {
            switch s {
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            case _ where isControl(s): out.append(contentsOf: "\\u{\(String(s.value, radix: 16))}".unicodeScalars)
            case _ where also.contains(s):
                out.append("\\")
                out.append(s)
            default: out.append(s)
            }
        }
        return String(out)
    }
}
