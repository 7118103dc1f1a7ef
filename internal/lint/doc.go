// Package lint holds repository-wide checks that run as tests: rules about
// how the code is laid out that no compiler enforces. It has no code of its
// own and nothing may import it.
package lint
