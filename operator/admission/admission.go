// Package admission is an offline admission check for MCPServer manifests: it gives the verdict
// a kube-apiserver that has manifests/crd/tollgate.dev_mcpservers.yaml installed gives to a
// create of the manifest (as `kubectl create -f` or a first `kubectl apply -f` sends it, with
// kubectl's default strict field validation), without a cluster.
//
// It does not re-implement any rule. It runs the API server's own code, from
// k8s.io/apiextensions-apiserver, in the order the server runs it:
//
//  1. decoding (schemaCoercingDecoder in pkg/apiserver/customresource_handler.go): the
//     apiVersion and kind, metadata decoded strictly, unknown fields found by structural
//     pruning, nulls dropped from non-nullable fields; any unknown field rejects the request
//     at this point, with nothing else checked, as a strict-field-validation server does;
//  2. defaulting from the schema's default values (unstructuredDefaulter);
//  3. the create path of the generic registry: a name from generateName, the request's
//     namespace, status dropped because the CRD has a status subresource (PrepareForCreate);
//  4. customResourceStrategy.Validate (pkg/registry/customresource/strategy.go): object
//     meta, the OpenAPI schema, embedded resources, list-map and list-set uniqueness, then
//     the x-kubernetes-validations CEL rules, which are skipped (with the server's own
//     "some validation rules were not checked" error) when an earlier error is "blocking"
//     (a wrong type, a missing required field, a value not in an enum, a string or list too
//     long), because CEL cannot evaluate those objects meaningfully;
//  5. rest.ValidateCreate's path-segment check of the name, run only when all else passed;
//  6. storage's refusal of a metadata.resourceVersion on create.
//
// Not covered: the admission plugins and webhooks of a real cluster (the namespace must
// exist, ValidatingAdmissionPolicies, quota), name conflicts with existing objects, updates
// (transition rules and ratcheting), and server-side apply, which reports duplicate list-map
// keys itself, with its own message, before validation runs.
package admission

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsinstall "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/install"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/api/operation"
	metavalidation "k8s.io/apimachinery/pkg/api/validate/content"
	genericvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage/names"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/manifests"
)

// DefaultNamespace is the namespace a manifest without metadata.namespace is validated in,
// the namespace kubectl sends it to with a default context.
const DefaultNamespace = "default"

// Validator checks MCPServer manifests as the API server does on create. Build it once with
// New: it holds the compiled schema and CEL programs. It is safe for concurrent use.
type Validator struct {
	gvk        schema.GroupVersionKind
	namespaced bool

	// structural is the version's structural schema with defaults pruned, the one the server
	// uses to prune, default, check list types and run CEL.
	structural *structuralschema.Structural
	// schemaValidator checks the OpenAPI schema (types, bounds, patterns, enums, required).
	schemaValidator apiservervalidation.SchemaValidator
	// celValidator holds the compiled x-kubernetes-validations rules of the whole schema.
	celValidator *cel.Validator
	// declarativeBeta mirrors the server's DeclarativeValidationBeta feature gate, which
	// selects the messages object meta validation reports.
	declarativeBeta bool
}

// New builds a Validator from the embedded MCPServer CRD. It first validates the CRD itself
// as the API server does when the CRD is created (structural schema, pruned defaults, CEL
// rules that compile, estimated CEL cost within budget), so an error from New is an error a
// cluster would give at `kubectl apply -f manifests/crd`.
func New() (*Validator, error) {
	return newFromCRD(manifests.MCPServerCRD())
}

func newFromCRD(crdYAML []byte) (*Validator, error) {
	scheme := runtime.NewScheme()
	apiextensionsinstall.Install(scheme)
	obj, _, err := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode(crdYAML, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("decode CRD: %w", err)
	}
	crd, ok := obj.(*apiextensionsv1.CustomResourceDefinition)
	if !ok {
		return nil, fmt.Errorf("decode CRD: got %T, want an apiextensions.k8s.io/v1 CustomResourceDefinition", obj)
	}
	scheme.Default(crd)

	// The whole CRD in the internal version, as the CRD registry validates it on create.
	internalCRD := &apiextensionsinternal.CustomResourceDefinition{}
	if err := scheme.Convert(crd, internalCRD, nil); err != nil {
		return nil, fmt.Errorf("convert CRD to internal: %w", err)
	}
	if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), internalCRD); len(errs) > 0 {
		return nil, fmt.Errorf("the API server would reject CRD %s: %w", crd.Name, errs.ToAggregate())
	}

	var version *apiextensionsv1.CustomResourceDefinitionVersion
	for i := range crd.Spec.Versions {
		if crd.Spec.Versions[i].Served && crd.Spec.Versions[i].Storage {
			version = &crd.Spec.Versions[i]
		}
	}
	if version == nil || version.Schema == nil || version.Schema.OpenAPIV3Schema == nil {
		return nil, errors.New("CRD has no served storage version with an openAPIV3Schema")
	}

	// As crdHandler.getOrCreateServingInfoFor builds them.
	internalSchema := &apiextensionsinternal.JSONSchemaProps{}
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(version.Schema.OpenAPIV3Schema, internalSchema, nil); err != nil {
		return nil, fmt.Errorf("convert schema to internal: %w", err)
	}
	structural, err := structuralschema.NewStructural(internalSchema)
	if err != nil {
		return nil, fmt.Errorf("structural schema: %w", err)
	}
	structural = structural.DeepCopy()
	if err := structuraldefaulting.PruneDefaults(structural); err != nil {
		return nil, fmt.Errorf("prune defaults: %w", err)
	}
	schemaValidator, _, err := apiservervalidation.NewSchemaValidator(internalSchema)
	if err != nil {
		return nil, fmt.Errorf("schema validator: %w", err)
	}

	return &Validator{
		gvk:             schema.GroupVersionKind{Group: crd.Spec.Group, Version: version.Name, Kind: crd.Spec.Names.Kind},
		namespaced:      crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
		structural:      structural,
		schemaValidator: schemaValidator,
		// The server compiles the rules once per CRD version, in NewStrategy.
		celValidator:    cel.NewValidator(structural, true, celconfig.PerCallLimit),
		declarativeBeta: utilfeature.DefaultFeatureGate.Enabled(features.DeclarativeValidationBeta),
	}, nil
}

// AdmitYAML is Admit for the YAML or JSON text of one document. Input that is not exactly one
// YAML or JSON object fails with one error at the root, like a failure to decode. Duplicate
// keys are not an error: kubectl converts YAML to JSON, keeping the last value of a key,
// before it sends the object.
func (v *Validator) AdmitYAML(doc []byte) (map[string]interface{}, field.ErrorList) {
	data, err := oneJSONDocument(doc)
	if err != nil {
		return nil, decodeError(err)
	}
	return v.admitJSON(data)
}

// Admit checks one MCPServer object, as decoded from JSON or YAML, and returns the errors the
// API server would return for its create (none means it would be admitted) and the object as
// the server would store it: defaulted, status dropped, namespace, name and generation filled
// in (but no uid, creationTimestamp or managedFields). The object is nil when errs is not
// empty; obj itself is not modified.
//
// The errors come in the server's order, with its messages. The server refuses a create in
// one of these ways, and the errors say which:
//   - unknown fields: with strict field validation the server refuses to decode the object,
//     HTTP 400 `MCPServer in version "v1alpha1" cannot be handled as a MCPServer: strict
//     decoding error: unknown field "spec.foo", unknown field ...`, and checks nothing else.
//     Each unknown field is one field.ErrorTypeInvalid error at its path, bad value omitted,
//     Origin OriginUnknownField, whose Detail is the server's `unknown field "spec.foo"`, in
//     the server's order. Only these are returned;
//   - an object the server cannot decode at all (metadata that is not an ObjectMeta, input
//     that is not one JSON object) is HTTP 400 too, with the same `... cannot be handled as
//     a MCPServer: ` framing: one error, at metadata or at the root (Origin OriginDecode);
//   - another apiVersion or kind: kubectl would send the object to another resource, or
//     answer that none matches; reported as the strategy's own type-meta errors
//     (`kind: Invalid value: "X": must be MCPServer`), and nothing else is checked;
//   - everything else is HTTP 422 `MCPServer.tollgate.dev "name" is invalid: [...]`, whose
//     items are exactly these errors' Error() texts. A failed CEL rule is a
//     field.ErrorTypeInvalid error whose Detail is the rule's message, at the rule's
//     fieldPath under the object the rule is on;
//   - a metadata.resourceVersion on a create passes validation and fails in storage, HTTP
//     500 `resourceVersion should not be set on objects to be created`: one error at
//     metadata.resourceVersion with that Detail;
//   - where the server's code panics, the server answers 500: one field.ErrorTypeInternal
//     error whose BadValue wraps ErrPanicked.
func (v *Validator) Admit(obj map[string]interface{}) (_ map[string]interface{}, errs field.ErrorList) {
	// A copy in the form the server decodes into: JSON types, integers as int64.
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, decodeError(err)
	}
	return v.admitJSON(data)
}

func (v *Validator) admitJSON(data []byte) (_ map[string]interface{}, errs field.ErrorList) {
	// The API server recovers from panics in handlers and answers 500; do the same, so that
	// no input can crash a caller. FuzzValidate checks that this never happens.
	defer func() {
		if r := recover(); r != nil {
			errs = field.ErrorList{field.InternalError(nil, fmt.Errorf("%w: %v", ErrPanicked, r))}
		}
	}()

	obj, errs := v.decode(data)
	if len(errs) > 0 {
		return nil, errs
	}

	// unstructuredDefaulter, run by the decoding codec after the coercion above.
	structuraldefaulting.Default(obj, v.structural)

	// The generic registry's create: generated name, request namespace, PrepareForCreate.
	prepareForCreate(obj, v.namespaced)

	if errs := v.validate(obj); len(errs) > 0 {
		return nil, errs
	}

	// The storage layer's check, after validation (storage.ErrResourceVersionSetOnCreate).
	meta, _ := obj["metadata"].(map[string]interface{})
	if rv, _ := meta["resourceVersion"].(string); rv != "" {
		return nil, field.ErrorList{field.Invalid(field.NewPath("metadata", "resourceVersion"), rv, "resourceVersion should not be set on objects to be created")}
	}
	return obj, nil
}

// ErrPanicked is wrapped by the error of the one field.ErrorTypeInternal error Admit returns
// when the API server's code panicked on the object (a bug here or there, not a verdict on
// the object): it is the error's BadValue, as field.InternalError keeps it.
var ErrPanicked = errors.New("admission validator panicked")

// decode mirrors the request decoder the API server builds for a custom resource with strict
// field validation: kjson.UnmarshalStrict, then unstructuredSchemaCoercer.apply with
// returnUnknownFieldPaths, then schemaCoercingDecoder's strict decoding error. It returns the
// coerced object, or the errors that make the server refuse the request.
func (v *Validator) decode(data []byte) (map[string]interface{}, field.ErrorList) {
	var obj map[string]interface{}
	strictErrs, err := kjson.UnmarshalStrict(data, &obj)
	if err != nil {
		return nil, decodeError(err)
	}
	if obj == nil {
		return nil, decodeError(errors.New("expected a JSON object, got null"))
	}

	// The apiVersion and kind route the request to this resource and select the schema; a
	// manifest of another kind would go elsewhere. customResourceValidator.ValidateTypeMeta's
	// messages; its check runs first in the strategy too.
	if errs := v.validateTypeMeta(obj); len(errs) > 0 {
		return nil, errs
	}

	// unstructuredSchemaCoercer.apply: save the metadata (decoded strictly), prune unknown
	// fields, drop nulls of non-nullable fields, coerce embedded objects, restore the metadata.
	apiVersion, kind := obj["apiVersion"], obj["kind"]
	objectMeta, foundMeta, unknown, err := schemaobjectmeta.GetObjectMetaWithOptions(obj, schemaobjectmeta.ObjectMetaOptions{
		ReturnUnknownFieldPaths: true,
	})
	if err != nil {
		return nil, field.ErrorList{field.Invalid(field.NewPath("metadata"), obj["metadata"], err.Error())}
	}
	unknown = append(unknown, structuralpruning.PruneWithOptions(obj, v.structural, true, structuralschema.UnknownFieldPathOptions{
		TrackUnknownFieldPaths: true,
	})...)
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(obj, v.structural)
	ferr, paths := schemaobjectmeta.CoerceWithOptions(nil, obj, v.structural, false, schemaobjectmeta.CoerceOptions{
		ReturnUnknownFieldPaths: true,
	})
	if ferr != nil {
		return nil, field.ErrorList{ferr}
	}
	unknown = append(unknown, paths...)
	obj["apiVersion"], obj["kind"] = apiVersion, kind
	if foundMeta {
		if err := schemaobjectmeta.SetObjectMeta(obj, objectMeta); err != nil {
			return nil, field.ErrorList{field.Invalid(field.NewPath("metadata"), obj["metadata"], err.Error())}
		}
	}

	if len(strictErrs) > 0 || len(unknown) > 0 {
		var errs field.ErrorList
		for _, e := range strictErrs {
			errs = append(errs, field.Invalid(nil, field.OmitValueType{}, e.Error()).WithOrigin(OriginDecode))
		}
		for _, p := range unknown {
			// The server's words: schemaCoercingDecoder's fmt.Errorf(`unknown field "%s"`, ...).
			errs = append(errs, &field.Error{Type: field.ErrorTypeInvalid, Field: p, BadValue: field.OmitValueType{}, Detail: fmt.Sprintf(`unknown field "%s"`, p), Origin: OriginUnknownField})
		}
		return nil, errs
	}
	return obj, nil
}

// validateTypeMeta is customResourceValidator.ValidateTypeMeta.
func (v *Validator) validateTypeMeta(obj map[string]interface{}) field.ErrorList {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	var errs field.ErrorList
	if kind != v.gvk.Kind {
		errs = append(errs, field.Invalid(field.NewPath("kind"), kind, fmt.Sprintf("must be %v", v.gvk.Kind)))
	}
	if want := v.gvk.GroupVersion().String(); apiVersion != want {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), apiVersion, fmt.Sprintf("must be %v", want)))
	}
	return errs
}

// prepareForCreate does what the generic registry does to an object between decoding and
// validation on create: Store.Create generates the name from generateName,
// rest.BeforeCreate takes the namespace from the request (kubectl sends one without a
// namespace to its context's, DefaultNamespace here), and customResourceStrategy's
// PrepareForCreate drops status (the CRD has a status subresource, so a create cannot set
// it) and sets generation 1.
func prepareForCreate(obj map[string]interface{}, namespaced bool) {
	meta, _ := obj["metadata"].(map[string]interface{})
	if meta == nil {
		meta = map[string]interface{}{}
		obj["metadata"] = meta
	}
	if name, _ := meta["name"].(string); name == "" {
		if gen, _ := meta["generateName"].(string); gen != "" {
			meta["name"] = names.SimpleNameGenerator.GenerateName(gen)
		}
	}
	if ns, _ := meta["namespace"].(string); ns == "" && namespaced {
		meta["namespace"] = DefaultNamespace
	}
	meta["generation"] = int64(1)
	delete(obj, "status")
}

// validate is customResourceStrategy.Validate followed by the rest of rest.ValidateCreate.
func (v *Validator) validate(obj map[string]interface{}) field.ErrorList {
	ctx := context.Background()

	// customResourceValidator.Validate: type meta (checked in decode), object meta, schema.
	// The CRD has no scale subresource.
	meta, errs := objectMeta(obj)
	if meta != nil {
		errs = genericvalidation.ValidateObjectMetaDeclaratively(ctx, operation.Create, meta, nil, v.namespaced,
			genericvalidation.NameIsDNSSubdomain, field.NewPath("metadata"), v.declarativeBeta)
	}
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, v.schemaValidator)...)

	// Embedded resources (x-kubernetes-embedded-resource; MCPServer has none today).
	errs = append(errs, schemaobjectmeta.Validate(ctx, nil, obj, v.structural, false)...)

	// x-kubernetes-list-type map and set: duplicate tool names, prompt names and resource URIs
	// fail here, as Duplicate value errors, before any CEL rule runs.
	errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, v.structural, obj)...)

	// x-kubernetes-validations, unless an earlier error makes the object unfit for CEL.
	if blocked, err := hasBlockingErr(errs); blocked {
		errs = append(errs, err)
	} else {
		celErrs, _ := v.celValidator.Validate(ctx, nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}

	// rest.ValidateCreate: the name as a path segment, only when everything else passed.
	if len(errs) == 0 && meta != nil {
		errs = append(errs, genericvalidation.ValidateObjectMetaAccessor(meta, v.namespaced, validatePathSegment, field.NewPath("metadata"))...)
	}
	return errs
}

// objectMeta is the registry's getObjectMeta: the metadata as a metav1.ObjectMeta, for
// customResourceValidator.validateObjectMetaDeclaratively (name a DNS-1123 subdomain,
// namespace a DNS-1123 label, labels, annotations, and so on).
func objectMeta(obj map[string]interface{}) (*metav1.ObjectMeta, field.ErrorList) {
	raw := obj["metadata"]
	if raw == nil {
		return &metav1.ObjectMeta{}, nil
	}
	m, ok := raw.(map[string]interface{})
	if !ok {
		return nil, field.ErrorList{field.Invalid(field.NewPath("metadata"), raw, fmt.Sprintf("expected map[string]interface{}, got %T", raw))}
	}
	meta := &metav1.ObjectMeta{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, meta); err != nil {
		return nil, field.ErrorList{field.Invalid(field.NewPath("metadata"), raw, err.Error())}
	}
	return meta, nil
}

// hasBlockingErr is the strategy's hasBlockingErr: the error types that make the server skip
// the CEL rules, and the error it reports in their place.
func hasBlockingErr(errs field.ErrorList) (bool, *field.Error) {
	for _, err := range errs {
		switch err.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation")
		}
	}
	return false, nil
}

// validatePathSegment is rest's validatePathSegment.
func validatePathSegment(name string, prefix bool) []string {
	if prefix {
		return metavalidation.IsPathSegmentPrefix(name)
	}
	return metavalidation.IsPathSegmentName(name)
}

// oneJSONDocument converts the YAML (or JSON) text of exactly one document to JSON, as
// kubectl does before it sends it: sigs.k8s.io/yaml, last value of a duplicate key wins.
func oneJSONDocument(doc []byte) ([]byte, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(doc)))
	var docs [][]byte
	for {
		d, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(d)
		if err != nil {
			return nil, err
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue // empty document, or comments only
		}
		docs = append(docs, j)
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("expected exactly one YAML or JSON document, got %d", len(docs))
	}
	return docs[0], nil
}

// Origins of the errors Admit returns that are no validation errors: they tell a caller how
// the server answers them without reading their text.
const (
	// OriginDecode marks errors of input the server could not decode (it answers them 400,
	// not 422 like the validation errors reported at the same root path).
	OriginDecode = "decode"
	// OriginUnknownField marks the unknown fields that make a strict-field-validation server
	// refuse to decode the object (400 "strict decoding error: unknown field ...").
	OriginUnknownField = "unknownField"
)

// decodeError reports input the server could not decode at all.
func decodeError(err error) field.ErrorList {
	return field.ErrorList{field.Invalid(nil, field.OmitValueType{}, err.Error()).WithOrigin(OriginDecode)}
}
