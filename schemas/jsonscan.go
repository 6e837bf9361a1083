package schemas

import (
	"math"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// This file holds the small JSON helpers shared by the decoders and encoders:
// a strict, non-recursive JSON scanner, exact number parsing, and string and
// float encoding.

func isWS(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// jsonError locates a syntax error; msg is a constant so that the accepting
// path does not allocate.
type jsonError struct {
	off     int
	msg     string
	tooDeep bool
}

const (
	stValue    = iota // a value is expected
	stKey             // an object key is expected (after ',')
	stObjFirst        // first key or '}' is expected
	stArrFirst        // first value or ']' is expected
	stAfter           // a value has just ended
)

// scanValue scans exactly one JSON value starting at b[i] (after any
// whitespace) and returns the index just after it. Containers may nest
// maxDepth deep (a scalar needs none). It does not recurse, so hostile
// nesting costs no stack. stack is scratch space, returned for reuse.
func scanValue(b []byte, i int, maxDepth int, stack []byte) (int, []byte, *jsonError) {
	stack = stack[:0]
	n := len(b)
	state := stValue
	for {
		i = skipWS(b, i)
		switch state {
		case stObjFirst:
			if i < n && b[i] == '}' {
				stack = stack[:len(stack)-1]
				i++
				state = stAfter
				continue
			}
			state = stKey
			fallthrough
		case stKey:
			if i >= n {
				return i, stack, &jsonError{off: i, msg: "unexpected end of input, want an object key"}
			}
			if b[i] != '"' {
				return i, stack, &jsonError{off: i, msg: "want a string object key"}
			}
			j, err := scanString(b, i+1)
			if err != nil {
				return i, stack, err
			}
			i = skipWS(b, j)
			if i >= n || b[i] != ':' {
				return i, stack, &jsonError{off: i, msg: "want ':' after object key"}
			}
			i++
			state = stValue
		case stArrFirst:
			if i < n && b[i] == ']' {
				stack = stack[:len(stack)-1]
				i++
				state = stAfter
				continue
			}
			state = stValue
			fallthrough
		case stValue:
			if i >= n {
				return i, stack, &jsonError{off: i, msg: "unexpected end of input, want a value"}
			}
			switch c := b[i]; {
			case c == '{' || c == '[':
				if len(stack) >= maxDepth {
					return i, stack, &jsonError{off: i, msg: "nesting deeper than the maximum depth", tooDeep: true}
				}
				stack = append(stack, c)
				i++
				if c == '{' {
					state = stObjFirst
				} else {
					state = stArrFirst
				}
				continue
			case c == '"':
				j, err := scanString(b, i+1)
				if err != nil {
					return i, stack, err
				}
				i = j
			case c == 't':
				if !hasPrefix(b[i:], "true") {
					return i, stack, &jsonError{off: i, msg: "invalid literal"}
				}
				i += 4
			case c == 'f':
				if !hasPrefix(b[i:], "false") {
					return i, stack, &jsonError{off: i, msg: "invalid literal"}
				}
				i += 5
			case c == 'n':
				if !hasPrefix(b[i:], "null") {
					return i, stack, &jsonError{off: i, msg: "invalid literal"}
				}
				i += 4
			case c == '-' || (c >= '0' && c <= '9'):
				j, err := scanNumber(b, i)
				if err != nil {
					return i, stack, err
				}
				i = j
			case c >= utf8.RuneSelf:
				return i, stack, &jsonError{off: i, msg: "unexpected non-ASCII byte (binary data or invalid UTF-8?)"}
			default:
				return i, stack, &jsonError{off: i, msg: "unexpected character, want a value"}
			}
			state = stAfter
		case stAfter:
			if len(stack) == 0 {
				return i, stack, nil
			}
			if i >= n {
				return i, stack, &jsonError{off: i, msg: "unexpected end of input inside an object or array"}
			}
			top := stack[len(stack)-1]
			switch b[i] {
			case ',':
				i++
				if top == '{' {
					state = stKey
				} else {
					state = stValue
				}
			case top + 2: // '{'+2 == '}', '['+2 == ']'
				stack = stack[:len(stack)-1]
				i++
			default:
				if top == '{' {
					return i, stack, &jsonError{off: i, msg: "want ',' or '}' after object value"}
				}
				return i, stack, &jsonError{off: i, msg: "want ',' or ']' after array value"}
			}
		}
	}
}

func hasPrefix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

// plainStringByte marks the bytes that need no attention inside a JSON string.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString scans a string body starting just after the opening quote and
// returns the index just after the closing quote.
func scanString(b []byte, i int) (int, *jsonError) {
	n := len(b)
	for i < n {
		c := b[i]
		if plainStringByte[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= n {
				return i, &jsonError{off: i, msg: "unterminated string"}
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > n || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, &jsonError{off: i, msg: `invalid \u escape in string`}
				}
				i += 6
			default:
				return i, &jsonError{off: i, msg: "invalid escape in string"}
			}
		case c < 0x20:
			return i, &jsonError{off: i, msg: "control character in string"}
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return i, &jsonError{off: i, msg: "invalid UTF-8 in string"}
			}
			i += size
		}
	}
	return i, &jsonError{off: i, msg: "unterminated string"}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// scanNumber scans a number per the JSON grammar and returns the index after it.
func scanNumber(b []byte, i int) (int, *jsonError) {
	n := len(b)
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < n && b[i] == '0':
		i++
	case i < n && b[i] >= '1' && b[i] <= '9':
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return i, &jsonError{off: start, msg: "invalid number"}
	}
	if i < n && b[i] == '.' {
		i++
		d := i
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return i, &jsonError{off: start, msg: "invalid number: no digit after '.'"}
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < n && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return i, &jsonError{off: start, msg: "invalid number: no digit in exponent"}
		}
	}
	return i, nil
}

// scanDecimal is scanNumber that also splits the number into *d, in the
// same pass.
func scanDecimal(b []byte, i int, d *decimal) (int, *jsonError) {
	n := len(b)
	start := i
	*d = decimal{exact: true}
	if b[i] == '-' {
		d.neg = true
		i++
	}
	switch {
	case i < n && b[i] == '0':
		i++
	case i < n && b[i] >= '1' && b[i] <= '9':
		for ; i < n; i++ {
			c := b[i] - '0'
			if c > 9 {
				break
			}
			if d.nd < 19 {
				d.mant = d.mant*10 + uint64(c)
				d.nd++
			} else {
				d.exp++
				if c != 0 {
					d.exact = false
				}
			}
		}
	default:
		return i, &jsonError{off: start, msg: "invalid number"}
	}
	if i < n && b[i] == '.' {
		i++
		f := i
		for ; i < n; i++ {
			c := b[i] - '0'
			if c > 9 {
				break
			}
			switch {
			case d.nd == 0 && c == 0:
				d.exp--
			case d.nd < 19:
				d.mant = d.mant*10 + uint64(c)
				d.nd++
				d.exp--
			case c != 0:
				d.exact = false
			}
		}
		if i == f {
			return i, &jsonError{off: start, msg: "invalid number: no digit after '.'"}
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < n && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		f := i
		e := 0
		for ; i < n; i++ {
			c := b[i] - '0'
			if c > 9 {
				break
			}
			if e < maxDecimalExp {
				e = e*10 + int(c)
			}
		}
		if i == f {
			return i, &jsonError{off: start, msg: "invalid number: no digit in exponent"}
		}
		if eneg {
			e = -e
		}
		d.exp += e
	}
	if d.mant == 0 {
		d.exp = 0
	}
	return i, nil
}

var pow10f = [...]float64{
	1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
}

// parseFloat converts s, which must be a valid JSON number (as jsonReader.num
// returns), to the nearest float64, exactly as strconv.ParseFloat does. A
// number too large for float64 yields ±Inf; one too small yields 0 or a
// subnormal.
func parseFloat(s []byte) float64 { return floatOf(decodeDecimal(s), s) }

// floatOf is parseFloat for a number already split into d.
func floatOf(d decimal, s []byte) float64 {
	// Clinger's fast path: a mantissa below 2^53 times an exact power of ten
	// rounds once, so the result is correctly rounded.
	if d.exact && d.nd <= 15 && d.exp >= -22 && d.exp <= 22 {
		f := float64(d.mant)
		if d.exp < 0 {
			f /= pow10f[-d.exp]
		} else {
			f *= pow10f[d.exp]
		}
		if d.neg {
			f = -f
		}
		return f
	}
	f, _ := strconv.ParseFloat(string(s), 64) // on overflow f is ±Inf
	return f
}

// parseInt64 parses a JSON number written as a plain integer (no fraction or
// exponent) that fits int64.
func parseInt64(s []byte) (int64, bool) {
	i := 0
	neg := false
	if len(s) > 0 && s[0] == '-' {
		neg = true
		i = 1
	}
	if i >= len(s) || (s[i] == '0' && len(s) > i+1) {
		return 0, false
	}
	var u uint64
	for ; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if u > (math.MaxUint64-9)/10 {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true //nolint:gosec // range checked above
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// decimal is a JSON number as mant × 10^exp. At most 19 significant digits
// are kept; exact is false when a non-zero digit was dropped.
type decimal struct {
	neg   bool
	mant  uint64
	nd    int // digits in mant (0 when mant == 0)
	exp   int
	exact bool
}

const maxDecimalExp = 1 << 20

// decodeDecimal splits s, which must be a valid JSON number.
func decodeDecimal(s []byte) (d decimal) {
	d.exact = true
	i := 0
	if s[0] == '-' {
		d.neg = true
		i++
	}
	frac := false
	for ; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			frac = true
			continue
		}
		if c == 'e' || c == 'E' {
			break
		}
		dig := uint64(c - '0')
		switch {
		case d.nd == 0 && dig == 0:
			if frac {
				d.exp-- // leading zero of the fraction
			}
		case d.nd < 19:
			d.mant = d.mant*10 + dig
			d.nd++
			if frac {
				d.exp--
			}
		default: // dropped digit
			if !frac {
				d.exp++
			}
			if dig != 0 {
				d.exact = false
			}
		}
	}
	if i < len(s) { // exponent
		i++
		eneg := false
		if s[i] == '+' || s[i] == '-' {
			eneg = s[i] == '-'
			i++
		}
		e := 0
		for ; i < len(s); i++ {
			if e < maxDecimalExp {
				e = e*10 + int(s[i]-'0')
			}
		}
		if eneg {
			e = -e
		}
		d.exp += e
	}
	if d.mant == 0 {
		d.exp = 0
	}
	return d
}

var pow10u64 = [...]uint64{
	1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
}

// scaled returns trunc(d × 10^k) for a non-negative d, and false when the
// result does not fit in uint64.
func (d decimal) scaled(k int) (uint64, bool) {
	e := d.exp + k
	switch {
	case d.mant == 0:
		return 0, true
	case e >= 0:
		if e >= len(pow10u64) {
			return 0, false
		}
		hi, lo := bits.Mul64(d.mant, pow10u64[e])
		return lo, hi == 0
	case -e >= len(pow10u64):
		return 0, true
	default:
		return d.mant / pow10u64[-e], true
	}
}

// integral reports whether d has no non-zero fractional digit.
func (d decimal) integral() bool {
	if !d.exact {
		return false // a dropped non-zero digit: either fractional, or beyond 19 digits
	}
	if d.exp >= 0 || d.mant == 0 {
		return true
	}
	if -d.exp >= len(pow10u64) {
		return false
	}
	return d.mant%pow10u64[-d.exp] == 0
}

// appendString appends s as a JSON string. Invalid UTF-8 is replaced by
// U+FFFD so the output is always valid JSON.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plainStringByte[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendFixed appends n×10^-k for an integral n with |n| < 2^53, where
// n is not a multiple of 10 when k > 0.
func appendFixed(dst []byte, n float64, k int) []byte {
	if n < 0 {
		dst = append(dst, '-')
		n = -n
	}
	u := uint64(n)
	p := pow10u64[k]
	dst = strconv.AppendUint(dst, u/p, 10)
	if k == 0 {
		return dst
	}
	dst = append(dst, '.')
	frac := u % p
	for q := p / 10; q > frac && q > 1; q /= 10 {
		dst = append(dst, '0')
	}
	return strconv.AppendUint(dst, frac, 10)
}

// appendFloat appends f as the shortest JSON number that parses back to
// exactly f, formatted as encoding/json does (plain decimal for
// 1e-6 <= |f| < 1e21, exponent form otherwise). NaN and ±Inf, which JSON
// cannot represent, are written as null, which every decoder here rejects.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	if f == 0 {
		if math.Signbit(f) {
			return append(dst, "-0"...)
		}
		return append(dst, '0')
	}
	// Fast path for values with at most 6 decimals, the common case of
	// sensor data. For |f| < 1e9, n = f×10^k is an exact integer below 2^53
	// and n/10^k is correctly rounded, so n/10^k == f proves that the decimal
	// n×10^-k parses back to f. Since ulp(f) < 10^-6 there is at most one
	// such n for each k, so the smallest k gives the shortest decimal, the
	// same that strconv finds.
	if a := math.Abs(f); a < 1e9 {
		for k := 0; k <= 6; k++ {
			n := math.Round(f * pow10f[k])
			if n/pow10f[k] == f {
				return appendFixed(dst, n, k)
			}
		}
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Shorten e-09 to e-9, as encoding/json does.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}
