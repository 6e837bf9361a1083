package schemas

import (
	"unicode/utf16"
	"unicode/utf8"
)

// jsonReader is a strict, single-pass, pull-style JSON reader over one
// document. It accepts exactly RFC 8259 JSON with valid UTF-8 in strings and
// containers nested at most maxDepth deep, and allocates nothing once its
// buffers have grown. Strings are returned unescaped: as sub-slices of the
// input when they hold no escape, otherwise as slices of an arena that is
// sized so that it never moves during one document, so every returned slice
// stays valid until the next reset.
//
// The first error is kept in err; after it every method is a no-op that
// returns zero values, so callers check err at convenient points.
type jsonReader struct {
	b        []byte
	i        int
	depth    int
	maxDepth int
	arena    []byte
	stack    []byte
	err      *jsonError
}

func (r *jsonReader) reset(b []byte, maxDepth int) {
	r.b, r.i, r.depth, r.maxDepth, r.err = b, 0, 0, maxDepth, nil
	r.arena = r.arena[:0]
}

func (r *jsonReader) fail(off int, msg string) {
	if r.err == nil {
		r.err = &jsonError{off: off, msg: msg}
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end (or
// after an error); a NUL byte in the input also reads as 0, so use eof to
// tell the end apart.
func (r *jsonReader) peek() byte {
	r.i = skipWS(r.b, r.i)
	if r.err != nil || r.i >= len(r.b) {
		return 0
	}
	return r.b[r.i]
}

// Value kinds, by the first byte of a value.
const (
	kindNone   byte = 0 // absent, or an error
	kindObject byte = '{'
	kindArray  byte = '['
	kindString byte = '"'
	kindNumber byte = '0'
	kindBool   byte = 't'
	kindNull   byte = 'n'
)

// kind returns the kind of the next value without consuming it; kindNone
// for anything that cannot start a value (skip reports the error).
func (r *jsonReader) kind() byte {
	switch c := r.peek(); {
	case c == '{' || c == '[' || c == '"' || c == 'n':
		return c
	case c == 't' || c == 'f':
		return kindBool
	case c == '-' || (c >= '0' && c <= '9'):
		return kindNumber
	}
	return kindNone
}

// kindName names a kind with its article, for messages.
func kindName(k byte) string {
	switch k {
	case kindObject:
		return "an object"
	case kindArray:
		return "an array"
	case kindString:
		return "a string"
	case kindNumber:
		return "a number"
	case kindBool:
		return "a boolean"
	case kindNull:
		return "null"
	}
	return "nothing"
}

// enterObject consumes '{'.
func (r *jsonReader) enterObject() bool {
	if r.peek() != '{' {
		r.fail(r.i, "want an object")
		return false
	}
	if r.depth >= r.maxDepth {
		r.err = &jsonError{off: r.i, msg: "nesting deeper than the maximum depth", tooDeep: true}
		return false
	}
	r.depth++
	r.i++
	return true
}

// nextKey reads the next key of the object entered last and the ':' after
// it. first tells whether this is the first call for that object. At the
// closing '}' it consumes it and returns ok == false.
func (r *jsonReader) nextKey(first bool) (key []byte, ok bool) {
	c := r.peek()
	if r.err != nil {
		return nil, false
	}
	switch {
	case c == '}':
		r.i++
		r.depth--
		return nil, false
	case first:
	case c == ',':
		r.i++
		c = r.peek()
	case r.eof():
		r.fail(r.i, "unexpected end of input inside an object")
		return nil, false
	default:
		r.fail(r.i, "want ',' or '}' after object value")
		return nil, false
	}
	if c != '"' {
		if r.eof() {
			r.fail(r.i, "unexpected end of input, want an object key")
		} else {
			r.fail(r.i, "want a string object key")
		}
		return nil, false
	}
	key = r.str()
	if r.peek() != ':' {
		r.fail(r.i, "want ':' after object key")
		return nil, false
	}
	r.i++
	return key, r.err == nil
}

// str reads a string value and returns its unescaped bytes.
func (r *jsonReader) str() []byte {
	if r.peek() != '"' {
		r.fail(r.i, "want a string")
		return nil
	}
	start := r.i + 1
	i := start
	b := r.b
	for i < len(b) && plainStringByte[b[i]] {
		i++
	}
	if i < len(b) && b[i] == '"' { // fast path: plain ASCII
		r.i = i + 1
		return b[start:i]
	}
	end, jerr := scanString(b, start)
	if jerr != nil {
		r.fail(jerr.off, jerr.msg)
		return nil
	}
	r.i = end
	raw := b[start : end-1]
	for _, c := range raw {
		if c == '\\' {
			return r.unescape(raw)
		}
	}
	return raw
}

// unescape decodes the escapes of a string body already checked by
// scanString. A lone UTF-16 surrogate becomes U+FFFD.
func (r *jsonReader) unescape(s []byte) []byte {
	if len(r.arena) == 0 && cap(r.arena) < len(r.b) {
		// Unescaped text is never longer than its source, so an arena of
		// the document's size never reallocates while slices point into it.
		r.arena = make([]byte, 0, len(r.b))
	}
	start := len(r.arena)
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			r.arena = append(r.arena, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			r.arena = append(r.arena, '\b')
		case 'f':
			r.arena = append(r.arena, '\f')
		case 'n':
			r.arena = append(r.arena, '\n')
		case 'r':
			r.arena = append(r.arena, '\r')
		case 't':
			r.arena = append(r.arena, '\t')
		case 'u':
			ru := rune(hex4(s[i+2:]))
			i += 6
			if utf16.IsSurrogate(ru) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if r2 := utf16.DecodeRune(ru, rune(hex4(s[i+2:]))); r2 != utf8.RuneError {
						ru = r2
						i += 6
					} else {
						ru = utf8.RuneError
					}
				} else {
					ru = utf8.RuneError
				}
			}
			r.arena = utf8.AppendRune(r.arena, ru)
			continue
		default: // '"', '\\', '/'
			r.arena = append(r.arena, s[i+1])
		}
		i += 2
	}
	return r.arena[start:len(r.arena):len(r.arena)]
}

func hex4(b []byte) uint16 {
	var v uint16
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		v = v<<4 | uint16(c)
	}
	return v
}

// numInto reads a number value into f: its literal text and its split.
func (r *jsonReader) numInto(f *field) {
	c := r.peek()
	if c != '-' && (c < '0' || c > '9') {
		r.fail(r.i, "want a number")
		return
	}
	start := r.i
	end, jerr := scanDecimal(r.b, start, &f.dec)
	if jerr != nil {
		r.fail(jerr.off, jerr.msg)
		return
	}
	r.i = end
	f.val = r.b[start:end]
}

// skip reads and discards one value of any kind, checking it strictly.
func (r *jsonReader) skip() {
	r.i = skipWS(r.b, r.i)
	if r.err != nil {
		return
	}
	end, stack, jerr := scanValue(r.b, r.i, r.maxDepth-r.depth, r.stack)
	r.stack = stack
	if jerr != nil {
		r.err = jerr
		return
	}
	r.i = end
}

// eof reports whether the input is consumed; call it after peek.
func (r *jsonReader) eof() bool { return r.i >= len(r.b) }

// end checks that only whitespace follows.
func (r *jsonReader) end() {
	r.peek()
	if !r.eof() {
		r.fail(r.i, "unexpected data after the top-level value")
	}
}
