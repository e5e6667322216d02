import Testing

@testable import VNSnapPeer

@Suite struct TOMLPrecheckTests {
    private func refusal(_ text: String) -> String? {
        do {
            try TOMLPrecheck.check(text, path: "t.toml")
            return nil
        } catch {
            return error.message
        }
    }

    @Test(arguments: [
        "[peer]\nname = \"h1\"\n",
        "[[vms]]\nname = 'a'\n[ peer . x ]\n[\"quoted key\"]\n['literal']\n",
        // Lines of an array value, of a multi-line string and of a comment may start with `[`.
        "seeds = [\n  [1, 2],\n  [\"/x\"],\n]\n[peer]\n",
        "append = \"\"\"\n[/not a header\n\"\"\"\n[peer]\n",
        "append = '''\n[/not a header either\n'''\n",
        "x = \"\" # [/comment\n[peer]\n",
        "x = \"a \\\" [/ b\"\n[[vms]]\n",
        "# [/ a comment\n\t[peer]\r\n",
        "\u{FEFF}[peer]\nname = \"h1\"\n",
    ])
    func test_check_validTOML_shouldPass(_ text: String) {
        #expect(self.refusal(text) == nil, "\(text)")
    }

    @Test(arguments: [
        ("[/control.sock\"\n", "line 1, column 2: a table header must start with a key, not '/'"),
        ("[peer]\n[[ =x]]\n", "line 2, column 4: a table header must start with a key, not '='"),
        ("x = [1]\n[.a]\n", "line 2, column 2: a table header must start with a key, not '.'"),
        ("[\u{0F}peer]\n", "line 1, column 2: control character U+000F (TOML allows none but tab)"),
        // Fuzzing found it: a byte-order mark first, then a header whose key starts with an invalid byte.
        ("\u{FEFF}[\u{FFFD}", "line 1, column 2: a table header must start with a key, not '\u{FFFD}'"),
        ("[peer]\nname = \"h\u{7F}1\"\n", "line 2, column 10: control character U+007F (TOML allows none but tab)"),
    ])
    func test_check_inputsTOMLKitWouldAbortOn_shouldBeRefusedNamingLineAndColumn(_ text: String, _ message: String) {
        #expect(self.refusal(text) == message)
    }
}
