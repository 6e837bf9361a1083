package pipecheck

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestLZ4 checks the tests' lz4 decoder against franz-go's on batches as
// franz-go compresses them (one small record to several 4 MiB blocks), and
// that it is fast where the default is slow (under -race).
func TestLZ4(t *testing.T) {
	c, err := kgo.DefaultCompressor(kgo.Lz4Compression())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 150, 64 << 10, 70 << 10, 1 << 20, 9 << 20} {
		src := make([]byte, size)
		for i := range src {
			src[i] = "abcdefgh{}\":,0123456789"[rng.IntN(8+size%15)]
		}
		comp, codec := c.Compress(new(bytes.Buffer), src)
		if codec != kgo.CodecLz4 {
			t.Fatalf("%d bytes: compressed with codec %v", size, codec)
		}
		comp = bytes.Clone(comp)
		got, err := Decompressor.Decompress(comp, codec)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(got, src) {
			t.Fatalf("%d bytes: decoded %d bytes that differ from the input", size, len(got))
		}
	}
	src := []byte(`{"device_id":"dev-1","ts":"2026-12-07T12:00:00.123Z","metrics":{"temp":21.5,"hum":40.25}}`)
	comp, codec := c.Compress(new(bytes.Buffer), src)
	comp = bytes.Clone(comp)
	start := time.Now()
	const n = 200
	for range n {
		if _, err := Decompressor.Decompress(comp, codec); err != nil {
			t.Fatal(err)
		}
	}
	mine := time.Since(start) / n
	start = time.Now()
	for range n {
		if _, err := kgo.DefaultDecompressor().Decompress(comp, codec); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("one small lz4 batch: %s here, %s with franz-go's default decompressor", mine, time.Since(start)/n)
	if mine > time.Millisecond {
		t.Errorf("one small lz4 batch took %s to decode, want well under a millisecond (1.5 µs under -race when measured)", mine)
	}
	if _, err := Decompressor.Decompress([]byte{1, 2, 3, 4, 5}, kgo.CodecLz4); err == nil {
		t.Fatal("garbage decoded without an error")
	}
}
