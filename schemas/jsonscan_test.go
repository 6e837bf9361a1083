package schemas

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// jsonFloat is the reference: encoding/json's formatting of a float64.
func jsonFloat(t testing.TB, f float64) string {
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkFloatFormat(t testing.TB, f float64) {
	t.Helper()
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return
	}
	got := string(appendFloat(nil, f))
	if want := jsonFloat(t, f); got != want {
		t.Fatalf("appendFloat(%v) = %s, want %s (bits %#x)", f, got, want, math.Float64bits(f))
	}
	back := parseFloat([]byte(got))
	if math.Float64bits(back) != math.Float64bits(f) {
		t.Fatalf("parseFloat(%s) = %v, want %v", got, back, f)
	}
}

func TestAppendFloatMatchesEncodingJSON(t *testing.T) {
	for _, f := range []float64{
		0, math.Copysign(0, -1), 1, -1, 0.1, 0.3, 21.5, -67, 1013.25, 3.7, 1e-6, 9.99999e-7, 1e-7,
		123456.789, 999999999.999999, 1e9, 1e9 + 0.5, 1e21, 1e20, 5e-324, math.MaxFloat64,
		math.SmallestNonzeroFloat64, 1.7976931348623157e308, 9007199254740993, 0.000001234,
		0.1 + 0.2, 100, 1e15, 123e-7, 2.5e-6, 0.5, 0.05, 0.005, 0.0005, 0.00005, 0.000005,
	} {
		checkFloatFormat(t, f)
		checkFloatFormat(t, -f)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		// Random bit patterns, random decimals of few digits, random scales.
		checkFloatFormat(t, math.Float64frombits(rng.Uint64()))
		d := float64(rng.IntN(2_000_000)-1_000_000) / math.Pow10(rng.IntN(9))
		checkFloatFormat(t, d)
		checkFloatFormat(t, rng.NormFloat64()*math.Pow10(rng.IntN(30)-15))
	}
}

func TestParseFloatMatchesStrconv(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		var s string
		switch rng.IntN(3) {
		case 0:
			s = strconv.FormatFloat(math.Float64frombits(rng.Uint64()), 'g', -1, 64)
		case 1:
			s = strconv.Itoa(rng.IntN(1e9)-5e8) + "." + strconv.Itoa(rng.IntN(1e6))
		default:
			s = strconv.Itoa(rng.IntN(1e6)) + "e" + strconv.Itoa(rng.IntN(60)-30)
		}
		if s == "NaN" || s == "+Inf" || s == "-Inf" {
			continue
		}
		want, _ := strconv.ParseFloat(s, 64)
		if got := parseFloat([]byte(s)); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("parseFloat(%s) = %v, want %v", s, got, want)
		}
	}
}

func FuzzAppendFloat(f *testing.F) {
	f.Add(21.5)
	f.Add(0.1)
	f.Add(1e-7)
	f.Fuzz(func(t *testing.T, v float64) { checkFloatFormat(t, v) })
}
