package io.sinkd.conductor;

import java.util.HashMap;
import java.util.Map;

/** The little JSON sinkd's protocol needs: string escaping, and reading one flat response object. */
final class Json {
    private Json() {}

    /** {@code s} as a JSON string literal; control characters escaped, everything else as is. */
    static void string(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }

    /**
     * A flat JSON object of strings, numbers, booleans, nulls and arrays of strings (sinkd's
     * responses): its members, numbers and booleans as their text, null as Java null, an array as
     * its strings joined by commas (sinkd's arrays hold queue types, which have none). Throws
     * IllegalArgumentException on anything else.
     */
    static Map<String, String> flatObject(String text) {
        Map<String, String> out = new HashMap<>();
        int[] at = {skip(text, 0)};
        expect(text, at, '{');
        at[0] = skip(text, at[0]);
        if (peek(text, at[0]) == '}') {
            return out;
        }
        while (true) {
            at[0] = skip(text, at[0]);
            String key = readString(text, at);
            at[0] = skip(text, at[0]);
            expect(text, at, ':');
            at[0] = skip(text, at[0]);
            char c = peek(text, at[0]);
            String value;
            if (c == '"') {
                value = readString(text, at);
            } else if (c == '[') {
                at[0]++;
                StringBuilder joined = new StringBuilder();
                at[0] = skip(text, at[0]);
                if (peek(text, at[0]) == ']') {
                    at[0]++;
                } else {
                    while (true) {
                        at[0] = skip(text, at[0]);
                        String element = readString(text, at);
                        if (element.indexOf(',') >= 0) {
                            throw new IllegalArgumentException("an array element with a comma at " + at[0]);
                        }
                        joined.append(joined.length() == 0 ? "" : ",").append(element);
                        at[0] = skip(text, at[0]);
                        char next = peek(text, at[0]);
                        at[0]++;
                        if (next == ']') {
                            break;
                        }
                        if (next != ',') {
                            throw new IllegalArgumentException("expected ',' or ']' at " + (at[0] - 1));
                        }
                    }
                }
                value = joined.toString();
            } else {
                int start = at[0];
                while (at[0] < text.length() && ",} \t\r\n".indexOf(text.charAt(at[0])) < 0) {
                    at[0]++;
                }
                value = text.substring(start, at[0]);
                if (value.isEmpty()) {
                    throw new IllegalArgumentException("no value for " + key + " at " + start);
                }
                if (value.equals("null")) {
                    value = null;
                }
            }
            out.put(key, value);
            at[0] = skip(text, at[0]);
            char next = peek(text, at[0]);
            at[0]++;
            if (next == '}') {
                return out;
            }
            if (next != ',') {
                throw new IllegalArgumentException("expected ',' or '}' at " + (at[0] - 1));
            }
        }
    }

    private static int skip(String text, int i) {
        while (i < text.length() && " \t\r\n".indexOf(text.charAt(i)) >= 0) {
            i++;
        }
        return i;
    }

    private static char peek(String text, int i) {
        if (i >= text.length()) {
            throw new IllegalArgumentException("the object ends early");
        }
        return text.charAt(i);
    }

    private static void expect(String text, int[] at, char c) {
        if (peek(text, at[0]) != c) {
            throw new IllegalArgumentException("expected '" + c + "' at " + at[0]);
        }
        at[0]++;
    }

    private static String readString(String text, int[] at) {
        expect(text, at, '"');
        StringBuilder out = new StringBuilder();
        while (true) {
            char c = peek(text, at[0]++);
            if (c == '"') {
                return out.toString();
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            char e = peek(text, at[0]++);
            switch (e) {
                case '"', '\\', '/' -> out.append(e);
                case 'b' -> out.append('\b');
                case 'f' -> out.append('\f');
                case 'n' -> out.append('\n');
                case 'r' -> out.append('\r');
                case 't' -> out.append('\t');
                case 'u' -> {
                    if (at[0] + 4 > text.length()) {
                        throw new IllegalArgumentException("a \\u escape ends early");
                    }
                    out.append((char) Integer.parseInt(text.substring(at[0], at[0] + 4), 16));
                    at[0] += 4;
                }
                default -> throw new IllegalArgumentException("unknown escape \\" + e);
            }
        }
    }
}
