// helm-render renders a Helm chart's templates with Go's text/template, the
// engine Helm itself uses, for the subset of Helm the sockgate chart needs
// (.Values, .Release, .Chart, include, default, quote, nindent, indent).
// No Helm binary can be installed on the machines this project is tested on;
// this keeps the rendering honest. Values come as JSON (converted by the caller).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

func main() {
	chart := flag.String("chart", "", "chart directory")
	valuesFile := flag.String("values", "", "values as JSON")
	name := flag.String("name", "sockgate", "release name")
	namespace := flag.String("namespace", "sockgate-system", "release namespace")
	appVersion := flag.String("app-version", "", "Chart.yaml appVersion")
	chartName := flag.String("chart-name", "", "Chart.yaml name")
	flag.Parse()

	raw, err := os.ReadFile(*valuesFile)
	check(err)
	var values map[string]interface{}
	check(json.Unmarshal(raw, &values))
	root := map[string]interface{}{
		"Values":  values,
		"Release": map[string]interface{}{"Name": *name, "Namespace": *namespace, "Service": "Helm"},
		"Chart":   map[string]interface{}{"Name": *chartName, "AppVersion": *appVersion},
	}

	t := template.New("chart").Option("missingkey=error")
	funcs := template.FuncMap{
		"quote":   func(v interface{}) string { return fmt.Sprintf("%q", fmt.Sprint(v)) },
		"indent":  func(n int, s string) string { return indentLines(n, s) },
		"nindent": func(n int, s string) string { return "\n" + indentLines(n, s) },
		"default": func(d interface{}, v interface{}) interface{} {
			if v == nil || v == "" || v == false || v == 0.0 {
				return d
			}
			return v
		},
		"include": func(name string, data interface{}) (string, error) {
			var buf bytes.Buffer
			err := t.ExecuteTemplate(&buf, name, data)
			return buf.String(), err
		},
	}
	t.Funcs(funcs)
	files, err := filepath.Glob(filepath.Join(*chart, "templates", "*"))
	check(err)
	sort.Strings(files)
	for _, f := range files {
		body, err := os.ReadFile(f)
		check(err)
		_, err = t.New(filepath.Base(f)).Parse(string(body))
		check(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasPrefix(base, "_") {
			continue
		}
		var buf bytes.Buffer
		check(t.ExecuteTemplate(&buf, base, root))
		out := strings.TrimSpace(buf.String())
		if out == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s/templates/%s\n%s\n", *chartName, base, out)
	}
}

func indentLines(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "helm-render:", err)
		os.Exit(1)
	}
}
