package shadow

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func obj(t *testing.T, s string) Object {
	t.Helper()
	o, err := DecodeObject([]byte(s), Limits{}, "test")
	if err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return o
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The examples of RFC 7386 appendix A, plus metadata.
func TestMergeRFC7386(t *testing.T) {
	cases := []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{`{"a":"b"}`, `{"a":{"c":null,"d":1}}`, `{"a":{"d":1}}`},
	}
	for _, c := range cases {
		target := obj(t, c.target)
		meta := metaFor(target, 1)
		Merge(target, meta, obj(t, c.patch), 2)
		if got := js(target); got != c.want {
			t.Errorf("merge %s into %s = %s, want %s", c.patch, c.target, got, c.want)
		}
	}
}

func TestMergeMetadataAndChanged(t *testing.T) {
	target := obj(t, `{"a":1,"b":{"c":2,"d":3}}`)
	meta := metaFor(target, 100)
	if Merge(target, meta, obj(t, `{"a":1.0,"b":{"c":2}}`), 200) {
		t.Error("a patch of equal values reported a change")
	}
	if got := js(meta); got != `{"a":{"timestamp":100},"b":{"c":{"timestamp":100},"d":{"timestamp":100}}}` {
		t.Errorf("metadata after a no-op patch: %s", got)
	}
	if !Merge(target, meta, obj(t, `{"b":{"d":4,"e":null},"f":true}`), 300) {
		t.Error("a changing patch reported no change")
	}
	if got := js(meta); got != `{"a":{"timestamp":100},"b":{"c":{"timestamp":100},"d":{"timestamp":300}},"f":{"timestamp":300}}` {
		t.Errorf("metadata: %s", got)
	}
	if !Merge(target, meta, obj(t, `{"b":null}`), 400) || js(meta) != `{"a":{"timestamp":100},"f":{"timestamp":300}}` {
		t.Errorf("delete: target %s meta %s", js(target), js(meta))
	}
}

func TestDelta(t *testing.T) {
	cases := []struct{ desired, reported, want string }{
		{`{}`, `{"a":1}`, `{}`},
		{`{"a":1}`, `{"a":1.0}`, `{}`},
		{`{"a":1}`, `{"a":2}`, `{"a":1}`},
		{`{"a":1}`, `{}`, `{"a":1}`},
		{`{"c":{"x":1,"y":2}}`, `{"c":{"x":1,"y":3,"z":0}}`, `{"c":{"y":2}}`},
		{`{"c":{"x":1}}`, `{"c":5}`, `{"c":{"x":1}}`},
		{`{"c":[1,2]}`, `{"c":[1,2]}`, `{}`},
		{`{"c":[1,2]}`, `{"c":[2,1]}`, `{"c":[1,2]}`},
		{`{"s":"on","n":null}`, `{"s":"on"}`, `{}`},
	}
	for _, c := range cases {
		if got := js(Delta(obj(t, c.desired), obj(t, c.reported))); got != c.want {
			t.Errorf("delta(%s, %s) = %s, want %s", c.desired, c.reported, got, c.want)
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	l := Limits{MaxBytes: 64, MaxDepth: 2, MaxKeys: 3}
	cases := []struct {
		in    string
		limit string // "" ok, "malformed", or the LimitError's Limit
	}{
		{`{"a":{"b":1}}`, ""},
		{`{"a":{"b":{"c":1}}}`, "depth"},
		{`{"a":[[1]]}`, "depth"},
		{`{"a":1,"b":2,"c":3,"d":4}`, "keys"},
		{`{"a":{"b":1,"c":2,"d":3}}`, "keys"},
		{`{"a":"` + strings.Repeat("x", 64) + `"}`, "size"},
		{`[1]`, "malformed"},
		{`{"a":1} {}`, "malformed"},
		{`{"a":`, "malformed"},
		{`null`, "malformed"},
	}
	for _, c := range cases {
		_, err := DecodeObject([]byte(c.in), l, "patch")
		var le *LimitError
		switch {
		case c.limit == "" && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.limit == "malformed" && !errors.Is(err, ErrMalformed):
			t.Errorf("%s: got %v, want ErrMalformed", c.in, err)
		case c.limit != "" && c.limit != "malformed" && (!errors.As(err, &le) || le.Limit != c.limit || !errors.Is(err, ErrLimit)):
			t.Errorf("%s: got %v, want the %s limit", c.in, err, c.limit)
		}
	}
}

func TestDeltaMeta(t *testing.T) {
	desired := obj(t, `{"c":{"x":1,"y":2},"m":3}`)
	meta := metaFor(desired, 7)
	d := Delta(desired, obj(t, `{"c":{"x":1}}`))
	if got := js(DeltaMeta(d, meta)); got != `{"c":{"y":{"timestamp":7}},"m":{"timestamp":7}}` {
		t.Errorf("delta metadata %s", got)
	}
}
