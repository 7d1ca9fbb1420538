#!/usr/bin/env python3
"""sinkd(8) in roff, generated from the program's own --help (scripts/package).

Usage: manpage.py SINKD_BINARY VERSION > sinkd.8
"""
import re
import subprocess
import sys


def help_text(binary, *args):
    return subprocess.run([binary, *args, "--help"], capture_output=True, text=True, check=True).stdout


def roff(text):
    """Text shown as is (.nf): backslashes doubled, lines starting with . or ' protected."""
    out = []
    for line in text.rstrip().splitlines():
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def main():
    binary, version = sys.argv[1], sys.argv[2]
    top = help_text(binary)
    overview = top.split("USAGE:")[0].replace("OVERVIEW:", "").strip()
    subcommands = re.findall(r"^  ([a-z][a-z-]+)\s{2,}", top.split("SUBCOMMANDS:")[1], re.M)
    print(f'.TH SINKD 8 "" "sinkd {version}" "System Administration"')
    print(".SH NAME")
    print("sinkd \\- durable event-forwarding sidecar for Netflix Conductor")
    print(".SH SYNOPSIS")
    print(".B sinkd")
    print(".I subcommand")
    print("[\\fIoptions\\fR]")
    print(".SH DESCRIPTION")
    for paragraph in overview.split("\n\n"):
        print(".PP")
        print(roff(" ".join(paragraph.split())))
    print(".SH COMMANDS")
    for name in subcommands:
        print(f".SS {name}")
        print(".nf")
        print(roff(help_text(binary, name)))
        print(".fi")
    print(".SH FILES")
    for path, what in [
        ("/etc/sinkd/sinkd.yaml", "the configuration (every key, with its default and a comment)"),
        ("/run/sinkd/ingest.sock", "the ingest socket (group sinkd)"),
        ("/run/sinkd/control.sock", "the control socket: status, reload, dead letters (root)"),
        ("/var/lib/sinkd/wal", "the write-ahead log"),
        ("/var/lib/sinkd/dead-letter", "records that could never be delivered"),
        ("/var/lib/sinkd/outbox", "the file sink family's files"),
    ]:
        print(f".TP\n.I {path}\n{what}")
    print(".SH SEE ALSO")
    print("\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), /usr/share/doc/sinkd/README.md, /usr/share/doc/sinkd/docs/ (OPERATIONS.md, SERVICE.md, CONFIGURATION.md, DELIVERY.md, DURABILITY.md, PROTOCOL.md, CLI.md, METRICS.md, sinks/)")


if __name__ == "__main__":
    main()
