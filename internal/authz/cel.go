package authz

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
)

// Limits on CEL conditions.
const (
	// MaxConditionLen bounds the source of a condition.
	MaxConditionLen = 4096
	// ConditionCostLimit bounds the work one evaluation may do, in CEL's
	// cost units (about one per operation, more for strings and lists
	// by their size). An evaluation that reaches it is an error.
	ConditionCostLimit = 100_000
)

// The attributes a condition may read. A condition that reads one the
// request does not have is not evaluated: it fails closed, as the rule's
// other fields do.
type attrs uint8

const (
	attrHTTP   attrs = 1 << iota // request.method, request.path, request.headers
	attrHost                     // request.host
	attrID                       // source.principal
	attrNS                       // source.namespace
	attrIP                       // source.ip
	attrDigest                   // source.digest
	attrTime                     // now
)

// celVars are the variables conditions may use; any other identifier is a
// compile error.
var celVars = []struct {
	name string
	typ  *cel.Type
	attr attrs
}{
	{"request.method", cel.StringType, attrHTTP},
	{"request.path", cel.StringType, attrHTTP},
	{"request.host", cel.StringType, attrHTTP | attrHost},
	{"request.headers", cel.MapType(cel.StringType, cel.ListType(cel.StringType)), attrHTTP},
	{"request.protocol", cel.StringType, 0},
	{"destination.port", cel.IntType, 0},
	{"source.authenticated", cel.BoolType, 0},
	{"source.principal", cel.StringType, attrID},
	{"source.namespace", cel.StringType, attrID | attrNS},
	{"source.ip", cel.StringType, attrIP},
	{"source.digest", cel.StringType, attrDigest},
	{"now", cel.TimestampType, attrTime},
}

var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	opts := []cel.EnvOption{
		cel.ParserExpressionSizeLimit(MaxConditionLen),
		cel.ParserRecursionLimit(100),
		cel.ExpressionNodeLimit(2000),
		// lowerAscii, split, replace...: for apps that fold case.
		ext.Strings(ext.StringsVersion(4)),
	}
	for _, v := range celVars {
		opts = append(opts, cel.Variable(v.name, v.typ))
	}
	return cel.NewEnv(opts...)
})

// condition is a compiled CEL condition.
type condition struct {
	src   string
	prg   cel.Program
	needs attrs
}

// maxCachedConditions bounds the cache of compiled conditions.
const maxCachedConditions = 4096

// conditionCache keeps compiled conditions by source: compiling one takes
// about a millisecond, and a proxy compiles its whole policy again on every
// configuration push. Compiled programs are immutable and safe to share.
var conditionCache struct {
	mu sync.Mutex
	m  map[string]*condition // guarded by mu
}

// compileCondition compiles a condition, or returns it from the cache,
// returning a message that says what is wrong with it if it does not
// compile.
func compileCondition(src string) (*condition, string) {
	conditionCache.mu.Lock()
	c, ok := conditionCache.m[src]
	conditionCache.mu.Unlock()
	if ok {
		return c, ""
	}
	c, msg := compileConditionUncached(src)
	if c == nil {
		return nil, msg
	}
	conditionCache.mu.Lock()
	defer conditionCache.mu.Unlock()
	if conditionCache.m == nil || len(conditionCache.m) >= maxCachedConditions {
		// Start over rather than track use: the conditions of the
		// current configuration come back on the next compile.
		conditionCache.m = make(map[string]*condition)
	}
	conditionCache.m[src] = c
	return c, ""
}

func compileConditionUncached(src string) (*condition, string) {
	if strings.TrimSpace(src) == "" {
		return nil, "must not be blank: leave when out to match without a condition"
	}
	if len(src) > MaxConditionLen {
		return nil, fmt.Sprintf("is longer than %d bytes", MaxConditionLen)
	}
	env, err := celEnv()
	if err != nil {
		return nil, "CEL environment: " + err.Error() // not reached
	}
	checked, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, "invalid CEL: " + oneLine(iss.Err().Error())
	}
	if checked.OutputType() != cel.BoolType {
		return nil, "must be a bool expression, not " + checked.OutputType().String()
	}
	needs, msg := inspect(checked.NativeRep())
	if msg != "" {
		return nil, msg
	}
	prg, err := env.Program(checked, cel.CostLimit(ConditionCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, "invalid CEL: " + oneLine(err.Error())
	}
	return &condition{src: src, prg: prg, needs: needs}, ""
}

// oneLine folds a multi-line CEL error (which draws a caret under the
// error) into one line.
func oneLine(s string) string {
	s = strings.TrimPrefix(s, "ERROR: <input>:")
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Trim(l, "|.^ ") == "" || strings.HasPrefix(l, "| ") {
			continue
		}
		out = append(out, strings.TrimPrefix(l, "ERROR: <input>:"))
	}
	return strings.Join(out, "; ")
}

// inspect returns the attributes a checked condition reads, or a message
// if it looks a header up by a name that is not in lower case (header
// names are matched in lower case: such a lookup could never succeed).
func inspect(a *ast.AST) (attrs, string) {
	var needs attrs
	var msg string
	isHeaders := func(e ast.Expr) bool {
		return e.Kind() == ast.IdentKind && e.AsIdent() == "request.headers"
	}
	checkKey := func(e ast.Expr) {
		if e.Kind() != ast.LiteralKind || msg != "" {
			return
		}
		if s, ok := e.AsLiteral().(types.String); ok && strings.ToLower(string(s)) != string(s) {
			msg = fmt.Sprintf("header names are matched in lower case: write %q, not %q", strings.ToLower(string(s)), string(s))
		}
	}
	ast.PreOrderVisit(a.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.IdentKind:
			for _, v := range celVars {
				if v.name == e.AsIdent() {
					needs |= v.attr
				}
			}
		case ast.CallKind:
			c := e.AsCall()
			args := c.Args()
			switch c.FunctionName() {
			case operators.Index, operators.OptIndex:
				if len(args) == 2 && isHeaders(args[0]) {
					checkKey(args[1])
				}
			case operators.In:
				if len(args) == 2 && isHeaders(args[1]) {
					checkKey(args[0])
				}
			}
		case ast.SelectKind:
			s := e.AsSelect()
			if isHeaders(s.Operand()) && strings.ToLower(s.FieldName()) != s.FieldName() && msg == "" {
				msg = fmt.Sprintf("header names are matched in lower case: write %q, not %q", strings.ToLower(s.FieldName()), s.FieldName())
			}
		}
	}))
	return needs, msg
}

// errConditionType is the error of a condition that did not give a bool.
var errConditionType = errors.New("authz: condition did not evaluate to a bool")

// eval evaluates the condition. It allocates; it copies r and v, so that
// neither escapes and Decide, which does not evaluate a condition on most
// requests, keeps them on the stack.
func (c *condition) eval(r *Request, v *view) (bool, error) {
	act := &activation{r: *r, v: *v}
	out, _, err := c.prg.Eval(act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, errConditionType
	}
	return bool(b), nil
}

// activation resolves the variables of a condition from a request.
type activation struct {
	r       Request
	v       view
	headers ref.Val
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) Parent() interpreter.Activation { return nil }

func (a *activation) ResolveName(name string) (any, bool) {
	r, v := &a.r, &a.v
	switch name {
	case "request.method":
		return types.String(v.method), true
	case "request.path":
		return types.String(v.path), true
	case "request.host":
		return types.String(v.host), true
	case "request.headers":
		if a.headers == nil {
			a.headers = types.DefaultTypeAdapter.NativeToValue(headerMap(r))
		}
		return a.headers, true
	case "request.protocol":
		return types.String(r.Protocol.String()), true
	case "destination.port":
		return types.Int(r.Port), true
	case "source.authenticated":
		return types.Bool(v.id != ""), true
	case "source.principal":
		return types.String(v.id), true
	case "source.namespace":
		return types.String(v.ns), true
	case "source.ip":
		if !r.SourceIP.IsValid() {
			return types.String(""), true
		}
		return types.String(r.SourceIP.Unmap().String()), true
	case "source.digest":
		return types.String(r.SourceDigest), true
	case "now":
		return types.Timestamp{Time: r.Time}, true
	}
	return nil, false
}

// headerMap collects the request's headers: names in lower case, each
// field's value trimmed of surrounding spaces and tabs, one list entry per
// field.
func headerMap(r *Request) map[string][]string {
	m := map[string][]string{}
	if r.Headers == nil || r.Protocol != ProtocolHTTP {
		return m
	}
	r.Headers.Range(func(name, value string) bool {
		name = strings.ToLower(name)
		m[name] = append(m[name], strings.Trim(value, " \t"))
		return true
	})
	return m
}
