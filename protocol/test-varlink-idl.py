#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Tests of the interface definition parser (varlink_idl.py) and the wire-name
# generator (embed.py): the protocol's own files parse to what they declare,
# each malformed definition fails at its line, the names follow the header's
# scheme, and two declarations that would share a constant fail the build.
# Run by meson (suite unit) or directly: test-varlink-idl.py [PROTOCOL_DIR].
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import embed  # noqa: E402
import varlink_idl  # noqa: E402
from varlink_idl import IdlError  # noqa: E402

PROTOCOL_DIR = HERE


class ProtocolFiles(unittest.TestCase):
    def load(self, name):
        iface, _ = varlink_idl.parse_file(os.path.join(PROTOCOL_DIR, name + '.varlink'))
        self.assertEqual(iface.name, name)
        return iface

    def test_agent(self):
        iface = self.load('io.tokenbudget.agent')
        self.assertEqual([m.name for m in iface.of_kind('method')], ['Request', 'Report', 'Release'])
        self.assertEqual([m.name for m in iface.of_kind('error')],
                         ['BudgetExhausted', 'Escalated', 'QueueTimeout', 'QueueFull', 'CircuitOpen',
                          'PowerPaused', 'UnknownAllocation', 'TooManyAllocations', 'TooManyScopes'])
        request = iface.member('Request')
        self.assertEqual([(f.name, str(f.type)) for f in request.params],
                         [('estimate', '?int'), ('class', '?string'), ('agent', '?string'),
                          ('model', '?string'), ('priority', '?string'), ('minTokens', '?int'),
                          ('waitUsec', '?int'), ('promptTokens', '?int'), ('onBehalfOf', '?OnBehalfOf')])
        self.assertEqual([(f.name, str(f.type)) for f in iface.member('OnBehalfOf').type.fields],
                         [('pid', 'int'), ('uid', 'int')])
        self.assertEqual([f.name for f in request.returns],
                         ['allocation', 'decision', 'granted', 'warnAt', 'hardLimit', 'priority',
                          'requestedPriority', 'reason', 'waitedUsec', 'suggestedMaxTokens',
                          'suggestedModel', 'wouldBe', 'wouldBeReason', 'powerState', 'powerFactor',
                          'hardMultiplier',
                          'predicted', 'predictedOutput', 'samples'])

    def test_admin(self):
        iface = self.load('io.tokenbudget.admin')
        self.assertEqual([m.name for m in iface.of_kind('type')], ['Window', 'Scope', 'Breaker', 'PendingRequest', 'PowerFactors', 'Power',
                          'Durability', 'Allocation', 'HistoryGroup', 'ClassBlocks', 'Class',
                          'EstimateTask', 'EstimateInterval', 'EstimateCost'])
        status = iface.member('Status')
        self.assertEqual(str(next(f for f in status.returns if f.name == 'scopes').type), '[]Scope')
        self.assertEqual(iface.member('List').params, [])
        self.assertEqual([m.name for m in iface.of_kind('method')], ['Status', 'List', 'SetLimits', 'Reload', 'Pending',
                                                                   'Approve', 'Deny', 'History', 'Classes',
                                                                   'Estimate'])
        self.assertEqual([m.name for m in iface.of_kind('error')], ['ReloadRejected', 'UnknownScope', 'NotPersistent', 'UnknownRequest',
                                                                  'HistoryUnavailable', 'UnknownClass'])

    def test_service(self):
        iface = self.load('org.varlink.service')
        self.assertEqual(iface.member('PermissionDenied').params, [])
        self.assertEqual(str(iface.member('GetInfo').returns[-1].type), '[]string')


# (text, line of the error, a part of its message)
BAD = [
    ('', 1, 'end of the file'),
    ('# only a comment\n', 1, 'end of the file'),
    ('method Foo() -> ()\n', 1, 'first declaration'),
    ('interface org.example\n', 1, 'declares nothing'),
    ('interface example\nmethod F() -> ()\n', 1, 'invalid interface name'),
    ('interface org..example\nmethod F() -> ()\n', 1, 'invalid interface name'),
    ('interface org.example.\nmethod F() -> ()\n', 1, 'invalid interface name'),
    ('interface 1org.example\nmethod F() -> ()\n', 1, 'invalid interface name'),
    ('interface org.-example\nmethod F() -> ()\n', 1, 'invalid interface name'),
    ('interface org.example-\nmethod F() -> ()\n', 1, 'invalid interface name'),
    ('interface org.ex_ample\nmethod F() -> ()\n', 1, 'invalid interface name'),
    ('interface org.example\n\nmethod foo() -> ()\n', 3, 'invalid method name'),
    ('interface org.example\nmethod Fo_o() -> ()\n', 2, 'invalid method name'),
    ('interface org.example\nmethod F(a: int) -> (b: int) method G() -> ()\n', 2, 'must start a new line'),
    ('interface org.example method F() -> ()\n', 1, 'must start a new line'),
    ('interface org.example\nmethod F() -> ()\ninterface org.other\n', 3, 'second "interface"'),
    ('interface org.example\nmethod F() ()\n', 2, "expected '->'"),
    ('interface org.example\nmethod F() -> (\n  a: int,\n  b int\n)\n', 4, 'same "( )"'),
    ('interface org.example\nmethod F(a: int,) -> ()\n', 2, 'expected field name'),
    ('interface org.example\nmethod F(a: int -> ()\n', 2, "expected ','"),
    ('interface org.example\nmethod F(a: integer) -> ()\n', 2, 'expected a type'),
    ('interface org.example\nmethod F(a: ??int) -> ()\n', 2, '"??"'),
    ('interface org.example\nmethod F(a: [int]) -> ()\n', 2, 'unexpected character'),
    ('interface org.example\nmethod F(_a: int) -> ()\n', 2, 'invalid field name'),
    ('interface org.example\nmethod F(a__b: int) -> ()\n', 2, 'invalid field name'),
    ('interface org.example\nmethod F(a_: int) -> ()\n', 2, 'invalid field name'),
    ('interface org.example\nmethod F(1a: int) -> ()\n', 2, 'invalid field name'),
    ('interface org.example\nmethod F(a: int, a: string) -> ()\n', 2, 'already declared'),
    ('interface org.example\nmethod F() -> ()\nerror F ()\n', 3, 'already declared'),
    ('interface org.example\nmethod F(a: Missing) -> ()\n', 2, 'not declared'),
    ('interface org.example\nerror E ()\nmethod F(a: E) -> ()\n', 3, 'not a type'),
    ('interface org.example\nmethod F(a, b) -> ()\n', 2, 'not an enumeration'),
    ('interface org.example\nerror E\n', 2, "expected '('"),
    ('interface org.example\ntype T (a: int\n', 2, 'end of the file'),
    ('interface org.example\ntype T (a: int)\n$\n', 3, 'unexpected character'),
    ('interface org.example\nmethod F(a: \u00e9) -> ()\n', 2, 'unexpected character'),
]

GOOD = [
    # The UAPI.20 grammar allows upper case and digit-led labels and runs of dashes.
    'interface Org.Example.DoesNotExist\nmethod Go() -> ()\n',
    'interface org.9lives.a--b\nmethod Go2() -> ()\n',
    'interface org.example # comment\n# doc\nmethod F(\n  # doc\n  a: ?[]int, b: [string]?string,\n'
    '  c: (x: int, y: (one, two)), d: object, e: any, f: float, g: bool, h_i: ?[string]()\n) -> ()\n',
    'interface org.example\ntype T (one, two_three)\nmethod F(t: ?T) -> (t: []T)\n',
    'interface org.example\r\nmethod F(method: string, type: string, error: string) -> ()\r\n',
]


class Parser(unittest.TestCase):
    def test_bad(self):
        for i, (text, line, message) in enumerate(BAD):
            with self.subTest(row=i, text=text):
                with self.assertRaises(IdlError) as cm:
                    varlink_idl.parse('x.varlink', text)
                self.assertEqual(cm.exception.line, line, str(cm.exception))
                self.assertIn(message, cm.exception.message)
                self.assertTrue(str(cm.exception).startswith(f'x.varlink:{line}:'), str(cm.exception))

    def test_good(self):
        for i, text in enumerate(GOOD):
            with self.subTest(row=i, text=text):
                varlink_idl.parse('x.varlink', text)

    def test_enum_type(self):
        iface = varlink_idl.parse('x.varlink', GOOD[3])
        self.assertEqual([v.name for v in iface.member('T').type.values], ['one', 'two_three'])


class Names(unittest.TestCase):
    def test_snake(self):
        for name, want in [('Request', 'REQUEST'), ('GetInterfaceDescription', 'GET_INTERFACE_DESCRIPTION'),
                           ('retryAfterUsec', 'RETRY_AFTER_USEC'), ('tylium_level', 'TYLIUM_LEVEL'),
                           ('HTTPServer', 'HTTP_SERVER'), ('Request2', 'REQUEST2'), ('a--b', 'A__B'),
                           ('id', 'ID')]:
            self.assertEqual(embed.snake(name), want)

    def generate(self, files):
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for name, text in files.items():
                paths.append(os.path.join(d, name))
                with open(paths[-1], 'w', encoding='utf-8') as f:
                    f.write(text)
            header = os.path.join(d, 'names.h')
            rc = embed.main(['--header', header, '--c', os.path.join(d, 'x.c')] + paths)
            if rc != 0:
                return None
            with open(header, encoding='utf-8') as f:
                return f.read()

    def test_protocol_header(self):
        names = [os.path.join(PROTOCOL_DIR, n + '.varlink')
                 for n in ('org.varlink.service', 'io.tokenbudget.agent', 'io.tokenbudget.admin')]
        files = {}
        for p in names:
            with open(p, encoding='utf-8') as f:
                files[os.path.basename(p)] = f.read()
        h = self.generate(files)
        for line in [
            '#define VL_INTERFACE_AGENT ',
            '#define VL_METHOD_AGENT_REQUEST ',
            '"io.tokenbudget.agent.Request"',
            '#define VL_ERROR_AGENT_BUDGET_EXHAUSTED ',
            '"io.tokenbudget.agent.BudgetExhausted"',
            '#define VL_ERROR_SERVICE_INTERFACE_NOT_FOUND ',
            '#define VL_IN_AGENT_REQUEST_ESTIMATE ',
            '#define VL_OUT_AGENT_REQUEST_WARN_AT ',
            '#define VL_FIELD_AGENT_BUDGET_EXHAUSTED_RETRY_AFTER_USEC ',
            '#define VL_FIELD_ADMIN_SCOPE_IN_FLIGHT_LIMIT ',
            '#define VL_OUT_ADMIN_STATUS_HIDDEN_SCOPES ',
        ]:
            self.assertIn(line, h)

    def test_collision_fails(self):
        # Method Foo's parameter bar_baz and method FooBar's parameter baz.
        text = 'interface org.example\nmethod Foo(bar_baz: int) -> ()\nmethod FooBar(baz: int) -> ()\n'
        self.assertIsNone(self.generate({'org.example.varlink': text}))
        # Same-spelled fields in one structure: aB and a_b.
        text = 'interface org.example\ntype T (aB: int, a_b: int)\nmethod F() -> ()\n'
        self.assertIsNone(self.generate({'org.example.varlink': text}))

    def test_same_last_label_fails(self):
        self.assertIsNone(self.generate({
            'org.a.agent.varlink': 'interface org.a.agent\nmethod F() -> ()\n',
            'org.b.agent.varlink': 'interface org.b.agent\nmethod G() -> ()\n',
        }))

    def test_file_name_must_match(self):
        self.assertIsNone(self.generate({'org.other.varlink': 'interface org.example\nmethod F() -> ()\n'}))

    def test_enum_values(self):
        h = self.generate({'org.example.varlink': GOOD[3]})
        self.assertIn('#define VL_ENUM_EXAMPLE_T_TWO_THREE', h)
        self.assertIn('#define VL_IN_EXAMPLE_F_T', h)


if __name__ == '__main__':
    if len(sys.argv) > 1 and not sys.argv[-1].startswith('-'):
        PROTOCOL_DIR = sys.argv.pop()
    unittest.main()
