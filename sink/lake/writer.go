package lake

import (
	"bytes"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// writerProps returns the Parquet settings of a dataset: zstd; dictionary
// encoding for the ids and names (device_id, metric, tags), which repeat;
// delta encoding for timestamps, sequence numbers and offsets, which rise
// slowly; byte-stream-split for the float columns, which zstd then
// compresses far better than plain IEEE doubles.
func writerProps(d Dataset, rowGroupRows int, level int) *parquet.WriterProperties {
	opts := []parquet.WriterProperty{
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithCompressionLevel(level),
		parquet.WithDictionaryDefault(false),
		parquet.WithMaxRowGroupLength(int64(rowGroupRows)),
		parquet.WithStats(true),
		parquet.WithCreatedBy("iotpipe sink lake (arrow-go v18)"),
		parquet.WithVersion(parquet.V2_6),
		parquet.WithDataPageVersion(parquet.DataPageV1),
	}
	for _, f := range d.Schema().Fields() {
		switch f.Name {
		case "device_id", "metric", "tags":
			opts = append(opts, parquet.WithDictionaryFor(f.Name, true))
			continue
		case "value":
			// Sensor values repeat (they have a resolution): a dictionary
			// beats byte-stream-split by far. For full-precision noise the
			// writer falls back to plain before the first page when the
			// dictionary does not pay.
			opts = append(opts, parquet.WithDictionaryFor(f.Name, true), parquet.WithDictionaryCostFallbackFor(f.Name, true))
			continue
		}
		switch f.Type.ID() {
		case arrow.TIMESTAMP, arrow.INT64, arrow.INT32:
			opts = append(opts, parquet.WithEncodingFor(f.Name, parquet.Encodings.DeltaBinaryPacked))
		case arrow.FLOAT64:
			opts = append(opts, parquet.WithEncodingFor(f.Name, parquet.Encodings.ByteStreamSplit))
		}
	}
	return parquet.NewWriterProperties(opts...)
}

// File is one Parquet file being written in memory for one dataset.
// Rows are appended to Arrow builders; every RowGroupRows rows they are
// encoded and compressed into a row group, so memory holds the compressed
// file plus at most one row group of Arrow data. File is not safe for
// concurrent use.
type File struct {
	ds           Dataset
	buf          bytes.Buffer
	fw           *pqarrow.FileWriter
	b            *rowBuilder
	rowGroupRows int
	rows         int
}

// FileOptions tune the Parquet files.
type FileOptions struct {
	// RowGroupRows is the number of rows per row group.
	RowGroupRows int
	// ZstdLevel is the zstd compression level (1 fastest … 22 smallest).
	ZstdLevel int
}

// NewFile starts an empty Parquet file of dataset d.
func NewFile(d Dataset, o FileOptions) (*File, error) {
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = DefaultRowGroupRows
	}
	if o.ZstdLevel == 0 {
		o.ZstdLevel = DefaultZstdLevel
	}
	f := &File{ds: d, rowGroupRows: o.RowGroupRows}
	fw, err := pqarrow.NewFileWriter(d.Schema(), &f.buf, writerProps(d, o.RowGroupRows, o.ZstdLevel),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return nil, fmt.Errorf("new parquet writer for %s: %w", d, err)
	}
	f.fw = fw
	f.b = newRowBuilder(memory.DefaultAllocator, d.Schema())
	return f, nil
}

// Rows is the number of rows appended so far.
func (f *File) Rows() int { return f.rows + f.b.rows }

// Size is the file's size so far: compressed row groups plus the in-memory
// size of the rows not yet encoded. It bounds the memory the file holds.
func (f *File) Size() int { return f.buf.Len() + f.b.bytes }

// flushIfFull encodes the pending rows as a row group once there are
// RowGroupRows of them.
func (f *File) flushIfFull() error {
	if f.b.rows >= f.rowGroupRows {
		return f.flush()
	}
	return nil
}

func (f *File) flush() error {
	if f.b.rows == 0 {
		return nil
	}
	n := f.b.rows
	rec := f.b.record()
	defer rec.Release()
	if err := f.fw.Write(rec); err != nil {
		return fmt.Errorf("write %s row group: %w", f.ds, err)
	}
	f.rows += n
	return nil
}

// Close encodes the remaining rows, writes the footer and returns the file's
// bytes. The File must not be used afterwards.
func (f *File) Close() ([]byte, error) {
	defer f.b.release()
	if err := f.flush(); err != nil {
		return nil, err
	}
	if err := f.fw.Close(); err != nil {
		return nil, fmt.Errorf("close %s parquet file: %w", f.ds, err)
	}
	return f.buf.Bytes(), nil
}

// Abort releases the file's memory without producing it.
func (f *File) Abort() {
	f.b.release()
}
