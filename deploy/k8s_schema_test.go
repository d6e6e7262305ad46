package deploy

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// TestKubernetesSchema decodes every manifest into the Kubernetes API's own Go types,
// strictly: a misspelt or misplaced field, or a value of the wrong type, fails, as
// `kubectl apply --validate=strict` would (kubeconform needs schemas from the network).
func TestKubernetesSchema(t *testing.T) {
	types := map[string]func() any{
		"v1/Namespace":                           func() any { return &corev1.Namespace{} },
		"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
		"v1/Secret":                              func() any { return &corev1.Secret{} },
		"v1/Service":                             func() any { return &corev1.Service{} },
		"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
		"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
		"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
		"batch/v1/Job":                           func() any { return &batchv1.Job{} },
		"networking.k8s.io/v1/Ingress":           func() any { return &networkingv1.Ingress{} },
	}
	files, _ := filepath.Glob("k8s/*.yaml")
	docSep := regexp.MustCompile(`(?m)^---\s*$`)
	n := 0
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || base == "nats-values.yaml" {
			continue // not API objects: kustomize's and the NATS chart's own formats
		}
		for i, doc := range docSep.Split(string(readFile(t, f)), -1) {
			if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Errorf("%s document %d: %v", f, i, err)
				continue
			}
			mk, ok := types[head.APIVersion+"/"+head.Kind]
			if !ok {
				t.Errorf("%s document %d: %s %s is not a kind this test knows", f, i, head.APIVersion, head.Kind)
				continue
			}
			if err := yaml.UnmarshalStrict([]byte(doc), mk()); err != nil {
				t.Errorf("%s document %d (%s): %v", f, i, head.Kind, err)
			}
			n++
		}
	}
	if n < 10 {
		t.Errorf("validated %d objects: the manifests seem to be missing", n)
	}
}
