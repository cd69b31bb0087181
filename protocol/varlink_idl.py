# SPDX-License-Identifier: MIT
"""A parser for Varlink interface definitions (.varlink files).

It reads the grammar of UAPI.20 ("Varlink IPC", section Interface
Definition, https://uapi-group.org/specifications/specs/varlink/): one
"interface NAME" declaration first, then "type", "method" and "error"
declarations, each starting on a new line; "#" comments to the end of the
line; types bool, int, float, string, object, any, named types, inline
structures and enumerations, with the "[]" (array), "[string]" (map) and "?"
(nullable) prefixes. Names are checked against the grammar's rules exactly:

  interface_name  [A-Za-z]([-]*[A-Za-z0-9])*(\\.[A-Za-z0-9]([-]*[A-Za-z0-9])*)+
  name            [A-Z][A-Za-z0-9]*          (types, methods, errors)
  field_name      [A-Za-z](_?[A-Za-z0-9])*   (fields, parameters, enum values)

and the file must be consistent: declaration names unique within the
interface, field names unique within a structure, named types declared with
"type". Anything else raises IdlError, whose text is "PATH:LINE:COLUMN:
message", so that a build using it fails pointing at the line.

It does not keep documentation comments (embed.py embeds the file's text
as is) and does not validate JSON against the types.
"""
import dataclasses
import re

INTERFACE_NAME_RE = re.compile(r'[A-Za-z](-*[A-Za-z0-9])*(\.[A-Za-z0-9](-*[A-Za-z0-9])*)+')
NAME_RE = re.compile(r'[A-Z][A-Za-z0-9]*')
FIELD_NAME_RE = re.compile(r'[A-Za-z](_?[A-Za-z0-9])*')

BUILTIN_TYPES = ('bool', 'int', 'float', 'string', 'object', 'any')
KEYWORDS = ('interface', 'type', 'method', 'error')

# A word is anything a name could be made of; the grammar rules above
# decide whether it is a valid one where it stands.
_WORD_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.\-]*')
_PUNCT = ('->', '[string]', '[]', '(', ')', ',', ':', '?')


class IdlError(Exception):
    def __init__(self, path, line, column, message):
        super().__init__(f'{path}:{line}:{column}: {message}')
        self.path = path
        self.line = line
        self.column = column
        self.message = message


@dataclasses.dataclass
class Token:
    text: str
    line: int
    column: int
    first_on_line: bool
    is_word: bool


@dataclasses.dataclass
class Type:
    """kind is one of BUILTIN_TYPES, 'named' (name set), 'struct' (fields
    set), 'enum' (values set), or a prefix 'nullable', 'array', 'map' whose
    element type is 'of'."""
    kind: str
    of: 'Type' = None
    name: str = None
    fields: list = None
    values: list = None

    def __str__(self):
        if self.kind == 'nullable':
            return '?' + str(self.of)
        if self.kind == 'array':
            return '[]' + str(self.of)
        if self.kind == 'map':
            return '[string]' + str(self.of)
        if self.kind == 'named':
            return self.name
        if self.kind == 'struct':
            return '(' + ', '.join(f'{f.name}: {f.type}' for f in self.fields) + ')'
        if self.kind == 'enum':
            return '(' + ', '.join(v.name for v in self.values) + ')'
        return self.kind


@dataclasses.dataclass
class Field:
    """A structure field or method parameter (type set) or an enum value
    (type None)."""
    name: str
    type: Type
    line: int
    column: int


@dataclasses.dataclass
class Member:
    """A declaration: kind 'type' (type is a struct or enum), 'method'
    (params and returns are lists of Field) or 'error' (params)."""
    kind: str
    name: str
    line: int
    column: int
    type: Type = None
    params: list = None
    returns: list = None


@dataclasses.dataclass
class Interface:
    name: str
    path: str
    line: int
    members: list

    def member(self, name):
        for m in self.members:
            if m.name == name:
                return m
        return None

    def of_kind(self, kind):
        return [m for m in self.members if m.kind == kind]


def _tokenize(path, text):
    tokens = []
    line, column, i = 1, 1, 0
    first_on_line = True
    while i < len(text):
        c = text[i]
        if c == '\n':
            line, column, i = line + 1, 1, i + 1
            first_on_line = True
            continue
        if c in ' \t\r':
            i, column = i + 1, column + 1
            continue
        if c == '#':
            end = text.find('\n', i)
            end = len(text) if end < 0 else end
            column += end - i
            i = end
            continue
        m = _WORD_RE.match(text, i)
        if m:
            tokens.append(Token(m.group(), line, column, first_on_line, True))
        else:
            p = next((p for p in _PUNCT if text.startswith(p, i)), None)
            if p is None:
                what = repr(c) if c.isprintable() else f'U+{ord(c):04X}'
                raise IdlError(path, line, column, f'unexpected character {what}')
            tokens.append(Token(p, line, column, first_on_line, False))
        n = len(tokens[-1].text)
        i, column = i + n, column + n
        first_on_line = False
    return tokens


class _Parser:
    def __init__(self, path, text):
        self.path = path
        self.tokens = _tokenize(path, text)
        self.pos = 0
        # A premature end is reported just after the last token.
        last = self.tokens[-1] if self.tokens else None
        self.end = (last.line, last.column + len(last.text)) if last else (1, 1)

    def fail(self, tok, message):
        line, column = (tok.line, tok.column) if tok else self.end
        raise IdlError(self.path, line, column, message)

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self, what):
        tok = self.peek()
        if tok is None:
            self.fail(None, f'expected {what}, got the end of the file')
        self.pos += 1
        return tok

    def expect(self, text):
        tok = self.next(repr(text))
        if tok.text != text:
            self.fail(tok, f'expected {text!r}, got {tok.text!r}')
        return tok

    def accept(self, text):
        tok = self.peek()
        if tok is not None and tok.text == text:
            self.pos += 1
            return tok
        return None

    def name(self, regex, what):
        tok = self.next(what)
        if not tok.is_word:
            self.fail(tok, f'expected {what}, got {tok.text!r}')
        if not regex.fullmatch(tok.text):
            self.fail(tok, f'invalid {what} {tok.text!r} (UAPI.20 grammar: {regex.pattern})')
        return tok

    def parse(self):
        tok = self.next('"interface"')
        if tok.text != 'interface':
            self.fail(tok, f'expected "interface NAME" as the first declaration, got {tok.text!r}')
        name = self.name(INTERFACE_NAME_RE, 'interface name')
        interface = Interface(name.text, self.path, tok.line, [])
        while self.peek() is not None:
            interface.members.append(self.member())
        if not interface.members:
            self.fail(None, f'interface {interface.name} declares nothing (UAPI.20: at least one member)')
        self.check(interface)
        return interface

    def member(self):
        tok = self.next('a declaration')
        if tok.text not in KEYWORDS or not tok.is_word:
            self.fail(tok, f'expected "type", "method" or "error", got {tok.text!r}')
        if not tok.first_on_line:
            self.fail(tok, f'"{tok.text}" must start a new line (UAPI.20: a line break after each declaration)')
        if tok.text == 'interface':
            self.fail(tok, 'a second "interface" declaration')
        name = self.name(NAME_RE, f'{tok.text} name')
        m = Member(tok.text, name.text, name.line, name.column)
        if tok.text == 'type':
            m.type = self.struct_or_enum()
        elif tok.text == 'method':
            m.params = self.struct('the parameters of method ' + name.text)
            self.expect('->')
            m.returns = self.struct('the reply of method ' + name.text)
        else:
            m.params = self.struct('the parameters of error ' + name.text)
        return m

    def struct(self, what):
        open_tok = self.peek()
        t = self.struct_or_enum()
        if t.kind != 'struct':
            self.fail(open_tok, f'{what} must be a structure "(name: type, ...)", not an enumeration')
        return t.fields

    def struct_or_enum(self):
        self.expect('(')
        if self.accept(')'):
            return Type('struct', fields=[])
        items, kind = [], None
        while True:
            name = self.name(FIELD_NAME_RE, 'field name')
            this = 'struct' if self.accept(':') else 'enum'
            if kind == 'struct' and this == 'enum':
                self.fail(name, f'expected ":" and a type after field {name.text} '
                          '(a structure field and an enumeration value in the same "( )")')
            if kind == 'enum' and this == 'struct':
                self.fail(name, f'field {name.text} has a type, the values before it do not '
                          '(a structure field and an enumeration value in the same "( )")')
            kind = this
            ftype = self.type() if kind == 'struct' else None
            items.append(Field(name.text, ftype, name.line, name.column))
            if self.accept(')'):
                break
            self.expect(',')
        if kind == 'struct':
            return Type('struct', fields=items)
        return Type('enum', values=items)

    def type(self):
        if self.accept('?'):
            inner = self.peek()
            if inner is not None and inner.text == '?':
                self.fail(inner, '"??" is not a type (UAPI.20: "?" takes an element type, "[]" or "[string]")')
            return Type('nullable', of=self.type())
        if self.accept('[]'):
            return Type('array', of=self.type())
        if self.accept('[string]'):
            return Type('map', of=self.type())
        tok = self.peek()
        if tok is not None and tok.text == '(':
            return self.struct_or_enum()
        tok = self.next('a type')
        if tok.is_word and tok.text in BUILTIN_TYPES:
            return Type(tok.text)
        if tok.is_word and NAME_RE.fullmatch(tok.text):
            t = Type('named', name=tok.text)
            t.line, t.column = tok.line, tok.column
            return t
        self.fail(tok, f'expected a type, got {tok.text!r}')

    def check(self, interface):
        seen = {}
        for m in interface.members:
            if m.name in seen:
                self.fail_at(m.line, m.column, f'{m.kind} {m.name} is already declared at line {seen[m.name]}'
                             ' (types, methods and errors share one namespace)')
            seen[m.name] = m.line
        for m in interface.members:
            if m.kind == 'type':
                self.check_type(interface, m.type)
            else:
                self.check_fields(interface, m.params)
                if m.returns is not None:
                    self.check_fields(interface, m.returns)

    def fail_at(self, line, column, message):
        raise IdlError(self.path, line, column, message)

    def check_fields(self, interface, fields):
        seen = {}
        for f in fields:
            if f.name in seen:
                self.fail_at(f.line, f.column, f'field {f.name} is already declared at line {seen[f.name]}')
            seen[f.name] = f.line
            if f.type is not None:
                self.check_type(interface, f.type)

    def check_type(self, interface, t):
        if t.kind in ('nullable', 'array', 'map'):
            self.check_type(interface, t.of)
        elif t.kind == 'struct':
            self.check_fields(interface, t.fields)
        elif t.kind == 'enum':
            self.check_fields(interface, t.values)
        elif t.kind == 'named':
            m = interface.member(t.name)
            if m is None or m.kind != 'type':
                what = 'not declared' if m is None else f'a {m.kind}, not a type'
                self.fail_at(t.line, t.column, f'type {t.name} is {what}')


def parse(path, text):
    """Parses one interface definition; raises IdlError."""
    return _Parser(path, text).parse()


def parse_file(path):
    with open(path, encoding='utf-8') as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise IdlError(path, 1, 1, f'not UTF-8: {e}') from None
    return parse(path, text), text
