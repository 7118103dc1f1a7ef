package normalize

import (
	"strings"
	"testing"
)

// FuzzPath checks that Path never panics, is idempotent, agrees with
// IsPath, and never returns a path that holds what it promises to remove
// or reject.
func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"/", "/a/b", "//admin", "/admin/../admin", "/admin%2F..", "/admin%2e%2e",
		"/%2e%2e/x", "/admin;foo", `\admin`, "/admin#", "/%61dmin", "/a/./b//c/",
		"/a%5Cb", "/caf%c3%a9", "/a%00", "/..", "/a/b/../../..", "/%", "/%2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Path(in)
		if err != nil {
			if IsPath(in) {
				t.Fatalf("IsPath(%q) but Path fails: %v", in, err)
			}
			return
		}
		if IsPath(in) != (in == out) {
			t.Fatalf("IsPath(%q) = %v, but Path returned %q", in, IsPath(in), out)
		}
		again, err := Path(out)
		if err != nil || again != out {
			t.Fatalf("Path(%q) = %q, but Path of that = %q, %v", in, out, again, err)
		}
		if !IsPath(out) {
			t.Fatalf("IsPath(Path(%q)) = false", in)
		}
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("Path(%q) = %q does not start with /", in, out)
		}
		for _, bad := range []string{"//", "/./", "/../", "%2F", "%2f", "%5C", "%5c", "\\", ";", "#", "?", "%2E", "%2e"} {
			if strings.Contains(out, bad) {
				t.Fatalf("Path(%q) = %q holds %q", in, out, bad)
			}
		}
		if strings.HasSuffix(out, "/.") || strings.HasSuffix(out, "/..") {
			t.Fatalf("Path(%q) = %q ends with a dot segment", in, out)
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("Path(%q) = %q holds byte %#x", in, out, c)
			}
		}
	})
}

// FuzzHost checks that Host never panics and is idempotent.
func FuzzHost(f *testing.F) {
	for _, s := range []string{"example.com", "EXAMPLE.com.:80", "[::1]:8080", "a..b", "127.1", "x:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Host(in)
		if err != nil {
			return
		}
		again, err := Host(out)
		if err != nil || again != out {
			t.Fatalf("Host(%q) = %q, but Host of that = %q, %v", in, out, again, err)
		}
		if strings.ToLower(out) != out && !strings.HasPrefix(out, "[") {
			t.Fatalf("Host(%q) = %q is not lower case", in, out)
		}
		name, _ := SplitHostPort(out)
		if strings.HasSuffix(name, ".") {
			t.Fatalf("Host(%q) = %q keeps a trailing dot", in, out)
		}
	})
}
