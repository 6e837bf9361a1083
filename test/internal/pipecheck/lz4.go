package pipecheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Decompressor is the tests' decompressor for reading whole topics: it
// decodes lz4 batches without lz4.Reader. Under the race detector,
// franz-go's default lz4 path costs about 16 ms per batch instead of under
// a microsecond: each lz4 frame the producer writes declares 4 MiB blocks,
// lz4.Reader takes a buffer of that size from a sync.Pool for every frame,
// and sync.Pool drops items at random under -race, so most batches
// allocate (and the race detector maps) 4 MiB. The bridge writes many
// small batches (5 ms linger), so a test reading a raw topic of 40,000
// messages spent minutes in decoding before its first record, and gave up
// ("read nothing"). Here every block is decoded with lz4.UncompressBlock
// into a scratch buffer that grows only as far as the data needs and is
// reused. Other codecs, and lz4 frames this does not handle (a dictionary,
// dependent blocks), go to franz-go's default decompressor.
var Decompressor kgo.Decompressor = &lz4Decompressor{def: kgo.DefaultDecompressor()}

type lz4Decompressor struct {
	def  kgo.Decompressor
	mu   sync.Mutex
	free [][]byte // scratch buffers (not a sync.Pool: see Decompressor)
}

var errLZ4Unsupported = errors.New("lz4 frame feature not handled")

func (d *lz4Decompressor) Decompress(src []byte, codec kgo.CompressionCodecType) ([]byte, error) {
	if codec != kgo.CodecLz4 {
		return d.def.Decompress(src, codec)
	}
	out, err := d.lz4(src)
	if errors.Is(err, errLZ4Unsupported) {
		return d.def.Decompress(src, codec)
	}
	return out, err
}

func (d *lz4Decompressor) scratch() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.free); n > 0 {
		b := d.free[n-1]
		d.free = d.free[:n-1]
		return b
	}
	return make([]byte, 64<<10)
}

func (d *lz4Decompressor) release(b []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free = append(d.free, b)
}

// lz4 decodes concatenated lz4 frames (the format of Kafka's lz4 batches).
func (d *lz4Decompressor) lz4(src []byte) ([]byte, error) {
	const magic, skippable = 0x184D2204, 0x184D2A50
	buf := d.scratch()
	defer func() { d.release(buf) }()
	var out []byte
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, fmt.Errorf("lz4: %d stray bytes after a frame", len(src))
		}
		m := binary.LittleEndian.Uint32(src)
		if m&0xFFFFFFF0 == skippable {
			if len(src) < 8 {
				return nil, errors.New("lz4: short skippable frame")
			}
			n := int(binary.LittleEndian.Uint32(src[4:]))
			if len(src) < 8+n {
				return nil, errors.New("lz4: short skippable frame")
			}
			src = src[8+n:]
			continue
		}
		if m != magic || len(src) < 7 {
			return nil, fmt.Errorf("lz4: not an lz4 frame (magic %#x)", m)
		}
		flg, bd := src[4], src[5]
		if flg>>6 != 1 {
			return nil, fmt.Errorf("lz4: frame version %d", flg>>6)
		}
		independent, blockSum, contentSize, contentSum, dictID := flg&0x20 != 0, flg&0x10 != 0, flg&0x08 != 0, flg&0x04 != 0, flg&0x01 != 0
		if dictID {
			return nil, errLZ4Unsupported
		}
		maxBlock := 1 << (8 + 2*int((bd>>4)&7)) // 4: 64 KiB … 7: 4 MiB
		pos := 6
		if contentSize {
			pos += 8
		}
		pos++ // header checksum
		blocks := 0
		for {
			if len(src) < pos+4 {
				return nil, errors.New("lz4: short block header")
			}
			size := binary.LittleEndian.Uint32(src[pos:])
			pos += 4
			if size == 0 { // end mark
				break
			}
			raw := size&0x80000000 != 0
			size &= 0x7FFFFFFF
			if len(src) < pos+int(size) {
				return nil, errors.New("lz4: short block")
			}
			block := src[pos : pos+int(size)]
			pos += int(size)
			if blockSum {
				pos += 4
			}
			blocks++
			if !independent && blocks > 1 {
				return nil, errLZ4Unsupported
			}
			if raw {
				out = append(out, block...)
				continue
			}
			for {
				n, err := lz4.UncompressBlock(block, buf)
				if err == nil {
					out = append(out, buf[:n]...)
					break
				}
				if len(buf) >= maxBlock {
					return nil, fmt.Errorf("lz4: block: %w", err)
				}
				buf = make([]byte, min(2*len(buf), maxBlock))
			}
		}
		if contentSum {
			pos += 4
		}
		if len(src) < pos {
			return nil, errors.New("lz4: short frame end")
		}
		src = src[pos:]
	}
	return out, nil
}
