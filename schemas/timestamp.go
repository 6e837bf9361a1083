package schemas

import (
	"time"
)

// Epoch-number unit detection. A numeric "ts" is read by magnitude:
//
//	ts < 1e11          seconds      (fractions allowed; up to year 5138)
//	1e11 <= ts < 1e14  milliseconds
//	1e14 <= ts < 1e17  microseconds
//	1e17 <= ts < 1e19  nanoseconds
//
// Numbers of 1e19 and above, and negative numbers, are invalid. Fractions are
// allowed in every unit; the result is truncated to whole microseconds.
const (
	EpochMillisThreshold = 1e11
	EpochMicrosThreshold = 1e14
	EpochNanosThreshold  = 1e17
	EpochMaxExclusive    = 1e19
)

// parseEpoch converts a JSON number of epoch seconds/ms/µs/ns to Unix
// microseconds.
func parseEpoch(d decimal) (int64, string) {
	if d.mant == 0 {
		return 0, ""
	}
	if d.neg {
		return 0, "epoch ts is negative"
	}
	// d is in [10^(nd+exp-1), 10^(nd+exp)), so d < 10^k iff nd+exp <= k.
	var shift int
	switch mag := d.nd + d.exp; {
	case mag <= 11:
		shift = 6 // seconds
	case mag <= 14:
		shift = 3 // milliseconds
	case mag <= 17:
		shift = 0 // microseconds
	case mag <= 19:
		shift = -3 // nanoseconds
	default:
		return 0, "epoch ts is 1e19 or more, beyond any supported unit"
	}
	us, ok := d.scaled(shift)
	if !ok || us > 1<<62 {
		return 0, "epoch ts out of range"
	}
	return int64(us), ""
}

// parseRFC3339 parses an RFC 3339 date-time (T or t separator, Z, z or a
// ±hh:mm offset, optional fraction of any length) to Unix microseconds,
// truncating sub-microsecond digits. It validates field ranges, including the
// day of the month; a leap second (second 60) is invalid.
func parseRFC3339(b []byte) (int64, string) {
	const bad = "ts is not an RFC 3339 date-time (want e.g. 2026-11-27T14:00:00.123Z)"
	if len(b) < len("2006-01-02T15:04:05Z") {
		return 0, bad
	}
	year, ok1 := digitsN(b[0:4])
	month, ok2 := digitsN(b[5:7])
	day, ok3 := digitsN(b[8:10])
	hour, ok4 := digitsN(b[11:13])
	minute, ok5 := digitsN(b[14:16])
	sec, ok6 := digitsN(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 ||
		b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return 0, bad
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return 0, "ts has a field out of range (month, day, hour, minute or second)"
	}
	i := 19
	nanos := 0
	if b[i] == '.' {
		i++
		start := i
		scale := 100_000_000
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			nanos += int(b[i]-'0') * scale
			scale /= 10
			i++
		}
		if i == start {
			return 0, bad
		}
	}
	if i >= len(b) {
		return 0, bad
	}
	offset := 0
	switch b[i] {
	case 'Z', 'z':
		i++
	case '+', '-':
		if len(b)-i != 6 || b[i+3] != ':' {
			return 0, bad
		}
		oh, ok1 := digitsN(b[i+1 : i+3])
		om, ok2 := digitsN(b[i+4 : i+6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, "ts has an invalid UTC offset"
		}
		offset = (oh*60 + om) * 60
		if b[i] == '-' {
			offset = -offset
		}
		i += 6
	default:
		return 0, bad
	}
	if i != len(b) {
		return 0, bad
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nanos, time.UTC)
	return t.Unix()*1e6 - int64(offset)*1e6 + int64(nanos/1000), ""
}

func digitsN(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	default:
		return 31
	}
}

// microTime converts Unix microseconds to a UTC time.Time.
func microTime(us int64) time.Time { return time.UnixMicro(us).UTC() }

// truncMicro returns t in UTC, truncated to whole microseconds, without a
// monotonic clock reading.
func truncMicro(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()).UTC() }
