package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// MaxHeaderBytes bounds a message's start line and header fields, as
// net/http's server does by default (http.DefaultMaxHeaderBytes).
const MaxHeaderBytes = http.DefaultMaxHeaderBytes

// Errors of the codec.
var (
	errHeaderTooLarge = errors.New("h1: header block too large")
	errBadLine        = errors.New("h1: malformed header line")
)

// field locates one header field in a header block.
type field struct {
	key, val span
}

type span struct{ start, end int }

// headerBlock reads start lines and header fields into one buffer, so
// that the strings of a message come from a single allocation.
type headerBlock struct {
	buf    []byte
	fields []field
	// crlf makes a line without CR before its LF an error, as net/http
	// has it for trailer sections.
	crlf bool
}

// readLine appends one line, without its line ending, to the block and
// returns its span. A line longer than what remains of max fails.
func (hb *headerBlock) readLine(br *bufio.Reader, max int) (span, error) {
	start := len(hb.buf)
	for {
		frag, err := br.ReadSlice('\n')
		if len(hb.buf)+len(frag) > max {
			return span{}, errHeaderTooLarge
		}
		hb.buf = append(hb.buf, frag...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return span{}, err
		}
	}
	end := len(hb.buf) - 1 // the '\n'
	if end > start && hb.buf[end-1] == '\r' {
		end--
	} else if hb.crlf {
		return span{}, errBadLine
	}
	hb.buf = hb.buf[:end]
	return span{start, end}, nil
}

// readFields reads header fields up to and including the empty line.
func (hb *headerBlock) readFields(br *bufio.Reader, max int) error {
	hb.fields = hb.fields[:0]
	for {
		ln, err := hb.readLine(br, max)
		if err != nil {
			return err
		}
		line := hb.buf[ln.start:ln.end]
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			// Obsolete line folding: refused, as RFC 9112 allows, rather
			// than joined in a way the app might not join it.
			return errBadLine
		}
		colon := -1
		for i, c := range line {
			if c == ':' {
				colon = i
				break
			}
		}
		if colon <= 0 {
			return errBadLine
		}
		key := line[:colon]
		if !validFieldName(key) {
			return errBadLine // including whitespace before the colon
		}
		vs, ve := colon+1, len(line)
		for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
			vs++
		}
		for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
			ve--
		}
		if !validFieldValue(line[vs:ve]) {
			return errBadLine
		}
		hb.fields = append(hb.fields, field{
			key: span{ln.start, ln.start + colon},
			val: span{ln.start + vs, ln.start + ve},
		})
	}
}

// header builds the header map of the fields, with canonical keys. s is
// the block as a string: keys and values are substrings of it.
func (hb *headerBlock) header(s string) http.Header {
	h := make(http.Header, len(hb.fields))
	vals := make([]string, len(hb.fields))
	for i, f := range hb.fields {
		k := canonicalKey(s[f.key.start:f.key.end])
		vals[i] = s[f.val.start:f.val.end]
		if old, ok := h[k]; ok {
			h[k] = append(old, vals[i])
			continue
		}
		h[k] = vals[i : i+1 : i+1]
	}
	return h
}

// canonicalKey returns the canonical form of a valid field name, without
// allocating when it already is canonical.
func canonicalKey(k string) string {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return textproto.CanonicalMIMEHeaderKey(k)
		}
		upper = c == '-'
	}
	return k
}

func validFieldName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// validFieldValue refuses control characters other than tab, as
// net/textproto does.
func validFieldValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseContentLength reads a Content-Length value: digits only.
func parseContentLength(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, fmt.Errorf("h1: bad Content-Length %q", s)
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("h1: bad Content-Length %q", s)
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// contentLength returns the single Content-Length of h, -1 without one.
// Repeated equal values are one; differing values are an error, as they
// are in net/http.
func contentLength(h http.Header) (int64, error) {
	cl := h["Content-Length"]
	if len(cl) == 0 {
		return -1, nil
	}
	first := textproto.TrimString(cl[0])
	for _, v := range cl[1:] {
		if textproto.TrimString(v) != first {
			return 0, errors.New("h1: message with differing Content-Length values")
		}
	}
	if len(cl) > 1 {
		h["Content-Length"] = cl[:1]
	}
	return parseContentLength(first)
}
