package normalize

import (
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		// Already normal: returned as is.
		{in: "/", want: "/"},
		{in: "/a", want: "/a"},
		{in: "/a/", want: "/a/"},
		{in: "/a/b.c/d-e_f~g", want: "/a/b.c/d-e_f~g"},
		{in: "/users/42/orders", want: "/users/42/orders"},
		{in: "/a/...", want: "/a/..."},
		{in: "/a/.b/..c/c..", want: "/a/.b/..c/c.."},
		{in: "/!$&'()*+,=:@", want: "/!$&'()*+,=:@"},
		{in: "/caf%C3%A9", want: "/caf%C3%A9"},
		{in: "/a%20b", want: "/a%20b"},
		{in: "/a%25b", want: "/a%25b"},
		{in: "/100%25", want: "/100%25"},
		{in: "/100%25%20off", want: "/100%25%20off"},
		{in: "/a%25g1", want: "/a%25g1"},
		{in: "/a%3Bb", want: "/a%3Bb"},
		{in: "/a%3Fb%23c", want: "/a%3Fb%23c"},
		{in: "/Admin", want: "/Admin"}, // paths are case-sensitive

		// Percent-decoding of unreserved characters; escapes in upper case.
		{in: "/%61dmin", want: "/admin"},
		{in: "/%41%42%43", want: "/ABC"},
		{in: "/%7e%2D%5f%2e%30", want: "/~-_.0"},
		{in: "/caf%c3%a9", want: "/caf%C3%A9"},
		{in: "/a%3bb", want: "/a%3Bb"},
		{in: "/%2541", err: errDoubleEncoded},
		{in: "/%252F", err: errDoubleEncoded},
		{in: "/%252e%252e/admin", err: errDoubleEncoded},
		{in: "/%2561dmin", err: errDoubleEncoded},
		{in: "/%25%410", err: errDoubleEncoded},
		{in: "/%25%41%30", err: errDoubleEncoded},
		{in: "/%25A%3F", want: "/%25A%3F"},
		{in: "/file%2Etxt", want: "/file.txt"},
		{in: "/%2Ea", want: "/.a"},
		{in: "/a%2E%2E%2E", want: "/a..."},

		// Dot segments and repeated slashes.
		{in: "/.", want: "/"},
		{in: "/./", want: "/"},
		{in: "/a/.", want: "/a/"},
		{in: "/a/./b", want: "/a/b"},
		{in: "/a/..", want: "/"},
		{in: "/a/../", want: "/"},
		{in: "/a/b/..", want: "/a/"},
		{in: "/a/b/../c", want: "/a/c"},
		{in: "/a/b/../../c", want: "/c"},
		{in: "/admin/../admin", want: "/admin"},
		{in: "/public/../admin", want: "/admin"},
		{in: "//", want: "/"},
		{in: "//admin", want: "/admin"},
		{in: "/a//b", want: "/a/b"},
		{in: "/a///b//", want: "/a/b/"},
		{in: "/a/.//./b", want: "/a/b"},
		{in: "/a//..", want: "/"},
		{in: "/%61/./%62/../c//", want: "/a/c/"},

		// Rejected.
		{in: "", err: errEmptyPath},
		{in: "a", err: errNotAbsolute},
		{in: "*", err: errNotAbsolute},
		{in: "http://x/a", err: errNotAbsolute},
		{in: `\admin`, err: errBackslash},
		{in: `/a\b`, err: errBackslash},
		{in: `/..\admin`, err: errBackslash},
		{in: "/a%5Cb", err: errEncodedBackslash},
		{in: "/a%5cb", err: errEncodedBackslash},
		{in: "/admin%2F..", err: errEncodedSlash},
		{in: "/admin%2f", err: errEncodedSlash},
		{in: "/a%00", err: errEncodedControl},
		{in: "/a%0D%0Ab", err: errEncodedControl},
		{in: "/a%7f", err: errEncodedControl},
		{in: "/a%", err: errBadEscape},
		{in: "/a%4", err: errBadEscape},
		{in: "/a%zz", err: errBadEscape},
		{in: "/a%4g", err: errBadEscape},
		{in: "/admin%2e%2e", want: "/admin.."},
		{in: "/%2e%2e/admin", err: errEncodedDot},
		{in: "/a/%2e%2e", err: errEncodedDot},
		{in: "/a/.%2e/b", err: errEncodedDot},
		{in: "/a/%2E/b", err: errEncodedDot},
		{in: "/..", err: errAboveRoot},
		{in: "/../admin", err: errAboveRoot},
		{in: "/a/../..", err: errAboveRoot},
		{in: "/a/../../b", err: errAboveRoot},
		{in: "/admin;foo", err: errSemicolon},
		{in: "/admin;", err: errSemicolon},
		{in: "/..;/admin", err: errSemicolon},
		{in: "/a;jsessionid=1/b", err: errSemicolon},
		{in: "/admin#", err: errFragment},
		{in: "/admin#x", err: errFragment},
		{in: "/admin?x", err: errQuery},
		{in: "/a b", err: errInvalidChar},
		{in: "/a\x00", err: errInvalidChar},
		{in: "/a\tb", err: errInvalidChar},
		{in: "/a\r\nb", err: errInvalidChar},
		{in: "/a\x7f", err: errInvalidChar},
		{in: "/caf\xc3\xa9", err: errInvalidChar},
		{in: "/a<b>", err: errInvalidChar},
		{in: `/a"b`, err: errInvalidChar},
		{in: "/a{b}", err: errInvalidChar},
		{in: "/a|b", err: errInvalidChar},
		{in: "/a^b", err: errInvalidChar},
		{in: "/a`b", err: errInvalidChar},
		{in: "/[a]", err: errInvalidChar},
		{in: "/" + strings.Repeat("a", MaxPathLen), err: errPathTooLong},
	}
	for _, tt := range tests {
		got, err := Path(tt.in)
		if err != tt.err || got != tt.want {
			t.Errorf("Path(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
			continue
		}
		if err != nil {
			if IsPath(tt.in) {
				t.Errorf("IsPath(%q) = true for a rejected path", tt.in)
			}
			continue
		}
		if IsPath(tt.in) != (tt.in == tt.want) {
			t.Errorf("IsPath(%q) = %v, want %v", tt.in, IsPath(tt.in), tt.in == tt.want)
		}
		if again, err := Path(got); err != nil || again != got {
			t.Errorf("Path(Path(%q)) = %q, %v; want %q (idempotent)", tt.in, again, err, got)
		}
	}
}

func TestPathLongestAccepted(t *testing.T) {
	p := "/" + strings.Repeat("a", MaxPathLen-1)
	if got, err := Path(p); err != nil || got != p {
		t.Errorf("Path of a %d-byte path: %v", len(p), err)
	}
}

func TestPathDoesNotAllocateWhenNormal(t *testing.T) {
	for _, p := range []string{"/", "/api/v1/users/42/orders", "/caf%C3%A9/x"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = Path(p) }); n != 0 {
			t.Errorf("Path(%q) allocates %v times", p, n)
		}
	}
	for _, p := range []string{"/a%2F", "/../x", "/a;b"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = Path(p) }); n != 0 {
			t.Errorf("Path(%q) (rejected) allocates %v times", p, n)
		}
	}
}

func BenchmarkPath(b *testing.B) {
	for _, p := range []string{"/api/v1/users/42/orders", "/api//v1/./users/%34%32/orders"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Path(p)
			}
		})
	}
}
