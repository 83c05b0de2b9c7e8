/* C fast paths for the decode hot path, behind the pure-Python code that stays the reference:
 *
 *   decode_record   decode.decode: a record's bytes straight to its ChangeEvent (a strict JSON parser that builds
 *                   only the event's values, without the typed {"S": ...} dicts in between)
 *   from_item       values.from_item: typed JSON (already parsed) to plain values
 *   split           layout.split: an item to pk / data / aux
 *   dumps           jsonenc.dumps: canonical exact JSON
 *   order_token     event.Position.order_token
 *
 * Each either returns exactly what its reference returns, or raises Fallback (or lets an exception of a reference
 * hook through); the Python wrapper then runs the reference, which also words the errors. Everything unusual
 * (numbers in exponent form, lone surrogates, floats, subclasses, escapes in field names, bad input) is left to
 * the reference or to reference hooks (configure()), so this file only has to be right about the common cases;
 * tests/unit/test_speedups.py compares both on random, broken and mutated input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *Fallback;         /* raised when the reference must decide */
static PyObject *empty_tuple;
static PyObject *DecimalType;      /* decimal.Decimal */
static PyObject *hook_number;      /* values.parse_number: N text -> int | Decimal, raises when invalid */
static PyObject *hook_binary;      /* values._binary: B text -> the same text, raises when invalid */
static PyObject *hook_number_kind; /* layout._number_kind: number -> "int" | "float" | None (unsafe) */
static PyObject *hook_decimal_text; /* jsonenc.decimal_text: Decimal -> canonical JSON number text */
static PyObject *RowType;           /* layout.Row */
static long max_digits = -1, max_nesting = -1, max_text_bytes = -1, max_object_depth = -1;
static PyObject *KIND_STR, *KIND_BOOL, *KIND_INT, *KIND_FLOAT; /* shape kinds: compared by identity */

#define MAX_ENCODE_DEPTH 200 /* deeper values go to the reference (decoded items nest at most 32 levels) */

static PyObject *
fallback(void)
{
    PyErr_SetNone(Fallback);
    return NULL;
}

/* Whether the hooks and limits a function needs were configured (by the module that owns them). */
static int
configured(int ready)
{
    if (ready)
        return 1;
    PyErr_SetString(Fallback, "kcl_relay.cdc._speedups is not configured for this function yet");
    return 0;
}

static inline int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A canonical plain decimal fraction: -?DIGITS.DIGITS, last digit not 0; *digits gets the digit count. */
static int
plain_fraction(const char *s, Py_ssize_t n, Py_ssize_t *digits)
{
    Py_ssize_t i = (n > 0 && s[0] == '-') ? 1 : 0, start = i;
    while (i < n && is_digit(s[i]))
        i++;
    if (i == start || i >= n || s[i] != '.')
        return 0;
    Py_ssize_t int_digits = i - start, frac_start = ++i;
    while (i < n && is_digit(s[i]))
        i++;
    if (i != n || i == frac_start || s[n - 1] == '0')
        return 0;
    *digits = int_digits + (n - frac_start);
    return 1;
}

/* ---------------------------------------------------------------- values.from_item */

static PyObject *convert(PyObject *av, long depth);

static PyObject *
convert_number(PyObject *text)
{
    if (PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text)) {
        const char *s = (const char *)PyUnicode_DATA(text);
        Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = (n > 0 && s[0] == '-') ? 1 : 0, start = i, digits;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == n && i > start && i - start <= max_digits)
            return PyLong_FromString(s, NULL, 10); /* plain integer: digits only, so int() semantics */
        /* Already canonical (no exponent, no trailing zero): Decimal(text) is the reference's value, digit for
           digit; at most 38 digits in plain notation also keeps the magnitude within DynamoDB's range. */
        if (plain_fraction(s, n, &digits) && digits <= max_digits)
            return PyObject_CallOneArg(DecimalType, text);
    }
    return PyObject_CallOneArg(hook_number, text);
}

static inline int
base64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '+' || c == '/';
}

static PyObject *
convert_binary(PyObject *value)
{
    /* Well-formed base64 (alphabet, at most two '=' at the end, length a multiple of 4) is what
       b64decode(validate=True) accepts; anything else is for the reference to judge. */
    if (PyUnicode_Check(value) && PyUnicode_IS_ASCII(value)) {
        const char *s = (const char *)PyUnicode_DATA(value);
        Py_ssize_t n = PyUnicode_GET_LENGTH(value), pad = 0, i;
        if (n % 4 == 0) {
            while (pad < 2 && n - pad > 0 && s[n - 1 - pad] == '=')
                pad++;
            for (i = 0; i < n - pad; i++)
                if (!base64_char(s[i]))
                    break;
            if (i == n - pad)
                return Py_NewRef(value);
        }
    }
    return PyObject_CallOneArg(hook_binary, value);
}

static PyObject *
convert_set(PyObject *value, char tag)
{
    if (!PyList_Check(value))
        return fallback();
    PyObject *set = PySet_New(NULL), *list = NULL;
    if (set == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
        PyObject *member = PyList_GET_ITEM(value, i), *element;
        if (tag == 'S') {
            if (!PyUnicode_Check(member))
                goto fail_fallback;
            element = Py_NewRef(member);
        }
        else if (tag == 'N')
            element = convert_number(member);
        else
            element = convert_binary(member);
        if (element == NULL)
            goto fail;
        int added = PySet_Add(set, element);
        Py_DECREF(element);
        if (added < 0)
            goto fail;
    }
    list = PySequence_List(set);
    Py_DECREF(set);
    if (list != NULL && PyList_Sort(list) < 0)
        Py_CLEAR(list);
    return list;
fail_fallback:
    Py_DECREF(set);
    return fallback();
fail:
    Py_DECREF(set);
    return NULL;
}

static PyObject *
convert_map(PyObject *value, long depth)
{
    if (!PyDict_Check(value))
        return fallback();
    PyObject *result = PyDict_New(), *name, *child;
    if (result == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(value, &pos, &name, &child)) {
        PyObject *converted = convert(child, depth);
        if (converted == NULL || PyDict_SetItem(result, name, converted) < 0) {
            Py_XDECREF(converted);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(converted);
    }
    return result;
}

static PyObject *
convert_list(PyObject *value, long depth)
{
    if (!PyList_Check(value))
        return fallback();
    Py_ssize_t n = PyList_GET_SIZE(value);
    PyObject *result = PyList_New(n);
    if (result == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *converted = convert(PyList_GET_ITEM(value, i), depth);
        if (converted == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, i, converted);
    }
    return result;
}

/* One typed attribute value; `depth` counts the documents (M, L) around it. */
static PyObject *
convert(PyObject *av, long depth)
{
    if (!PyDict_Check(av) || PyDict_GET_SIZE(av) != 1)
        return fallback();
    Py_ssize_t pos = 0;
    PyObject *tag, *value;
    PyDict_Next(av, &pos, &tag, &value);
    if (!PyUnicode_CheckExact(tag) || !PyUnicode_IS_ASCII(tag))
        return fallback();
    const char *t = (const char *)PyUnicode_DATA(tag);
    switch (PyUnicode_GET_LENGTH(tag)) {
    case 1:
        switch (t[0]) {
        case 'S':
            return PyUnicode_Check(value) ? Py_NewRef(value) : fallback();
        case 'N':
            return convert_number(value);
        case 'B':
            return convert_binary(value);
        case 'M':
        case 'L':
            if (depth >= max_nesting)
                return fallback();
            return t[0] == 'M' ? convert_map(value, depth + 1) : convert_list(value, depth + 1);
        }
        break;
    case 2:
        if (t[1] == 'S' && (t[0] == 'S' || t[0] == 'N' || t[0] == 'B'))
            return convert_set(value, t[0]);
        break;
    case 4:
        if (memcmp(t, "BOOL", 4) == 0)
            return PyBool_Check(value) ? Py_NewRef(value) : fallback();
        if (memcmp(t, "NULL", 4) == 0)
            return value == Py_True ? Py_NewRef(Py_None) : fallback();
        break;
    }
    return fallback();
}

static PyObject *
from_item(PyObject *module, PyObject *image)
{
    if (!configured(DecimalType && hook_number && hook_binary && max_digits > 0 && max_nesting > 0))
        return NULL;
    if (!PyDict_Check(image))
        return fallback();
    PyObject *result = PyDict_New(), *name, *av;
    if (result == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(image, &pos, &name, &av)) {
        PyObject *value = convert(av, 0);
        if (value == NULL || PyDict_SetItem(result, name, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(value);
    }
    return result;
}

/* ---------------------------------------------------------------- layout.split */

/* Shapes as in layout.py: Py_None (null), a kind (KIND_*), a dict (object shape) or a 1-tuple (list shape).
   Functions return a new reference, or NULL: with an exception set on error, without one when unsafe. */

static int
valid_object_key(PyObject *name)
{
    if (!PyUnicode_Check(name))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if (n == 0)
        return 0;
    int kind = PyUnicode_KIND(name);
    const void *data = PyUnicode_DATA(name);
    if (PyUnicode_READ(kind, data, 0) == '_')
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        /* beyond U+FFFF: CrateDB 6.4.3 cannot Get such a row (layout.valid_object_key says why) */
        if (ch == '.' || ch == '[' || ch == ']' || ch == '\t' || ch == '\n' || ch == '\r' || ch > 0xFFFF)
            return 0;
    }
    return 1;
}

static int
text_fits(PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), bytes = 0;
    if (PyUnicode_IS_ASCII(text))
        return n <= max_text_bytes;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch < 0x80)
            bytes += 1;
        else if (ch < 0x800)
            bytes += 2;
        else if (ch >= 0xD800 && ch <= 0xDFFF)
            return 0; /* a lone surrogate cannot be stored as text */
        else if (ch < 0x10000)
            bytes += 3;
        else
            bytes += 4;
    }
    return bytes <= max_text_bytes;
}

static PyObject *
number_kind(PyObject *value)
{
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        /* As layout.py: CrateDB refuses the two ends of BIGINT's range. */
        if (overflow == 0 && !PyErr_Occurred() && number != LLONG_MIN && number != LLONG_MAX)
            return Py_NewRef(KIND_INT);
        PyErr_Clear();
        return NULL;
    }
    if (Py_IS_TYPE(value, (PyTypeObject *)DecimalType)) {
        /* A non-integral plain fraction of at most 15 digits converts to the nearest double and back to the same
           decimal (DBL_DIG): the reference's round trip check passes. */
        PyObject *text = PyObject_Str(value);
        if (text == NULL)
            return NULL;
        Py_ssize_t digits;
        int plain = PyUnicode_IS_ASCII(text) &&
                    plain_fraction((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), &digits) &&
                    digits <= 15;
        Py_DECREF(text);
        if (plain)
            return Py_NewRef(KIND_FLOAT);
    }
    PyObject *kind = PyObject_CallOneArg(hook_number_kind, value);
    if (kind == NULL || kind == Py_None) {
        Py_XDECREF(kind);
        return NULL;
    }
    PyObject *same = PyUnicode_Compare(kind, KIND_INT) == 0 ? KIND_INT : KIND_FLOAT;
    if (PyErr_Occurred()) {
        Py_DECREF(kind);
        return NULL;
    }
    Py_DECREF(kind);
    return Py_NewRef(same);
}

/* The shape both fit. Returns `a` itself (a new reference) when `b` adds nothing to it: elements of one list
   mostly share their shape, and then nothing is copied. */
static PyObject *
merge(PyObject *a, PyObject *b)
{
    if (a == Py_None)
        return Py_NewRef(b);
    if (b == Py_None)
        return Py_NewRef(a);
    if (PyUnicode_Check(a) || PyUnicode_Check(b))
        return a == b ? Py_NewRef(a) : NULL;
    if (PyDict_Check(a) && PyDict_Check(b)) {
        PyObject *merged = NULL, *key, *shape; /* a copy of a, made at the first change */
        Py_ssize_t pos = 0;
        while (PyDict_Next(b, &pos, &key, &shape)) {
            PyObject *mine = PyDict_GetItemWithError(merged ? merged : a, key), *combined;
            if (mine == NULL && PyErr_Occurred())
                goto fail;
            combined = mine == NULL ? Py_NewRef(shape) : merge(mine, shape);
            if (combined == NULL)
                goto fail;
            if (combined != mine &&
                ((merged == NULL && (merged = PyDict_Copy(a)) == NULL) || PyDict_SetItem(merged, key, combined) < 0)) {
                Py_DECREF(combined);
                goto fail;
            }
            Py_DECREF(combined);
        }
        return merged ? merged : Py_NewRef(a);
    fail:
        Py_XDECREF(merged);
        return NULL;
    }
    if (PyTuple_Check(a) && PyTuple_Check(b)) {
        PyObject *element = merge(PyTuple_GET_ITEM(a, 0), PyTuple_GET_ITEM(b, 0)), *list_shape;
        if (element == NULL || element == PyTuple_GET_ITEM(a, 0)) {
            Py_XDECREF(element);
            return element == NULL ? NULL : Py_NewRef(a);
        }
        list_shape = PyTuple_Pack(1, element);
        Py_DECREF(element);
        return list_shape;
    }
    return NULL;
}

/* layout._shape. Outside lists no shape is needed, only the verdict: dicts then return Py_None. */
static PyObject *
shape(PyObject *value, long depth, int in_list)
{
    if (value == Py_None)
        return Py_NewRef(Py_None);
    if (PyUnicode_Check(value))
        return text_fits(value) ? Py_NewRef(KIND_STR) : NULL;
    if (PyBool_Check(value))
        return Py_NewRef(KIND_BOOL);
    if (PyLong_Check(value) || PyFloat_Check(value) || PyObject_TypeCheck(value, (PyTypeObject *)DecimalType))
        return number_kind(value);
    if (PyDict_Check(value)) {
        if (depth >= max_object_depth)
            return NULL;
        PyObject *shapes = in_list ? PyDict_New() : NULL, *key, *child;
        if (in_list && shapes == NULL)
            return NULL;
        Py_ssize_t pos = 0;
        while (PyDict_Next(value, &pos, &key, &child)) {
            PyObject *child_shape;
            if (!valid_object_key(key) || (child_shape = shape(child, depth + 1, in_list)) == NULL) {
                Py_XDECREF(shapes);
                return NULL;
            }
            int set = shapes ? PyDict_SetItem(shapes, key, child_shape) : 0;
            Py_DECREF(child_shape);
            if (set < 0) {
                Py_DECREF(shapes);
                return NULL;
            }
        }
        return shapes ? shapes : Py_NewRef(Py_None);
    }
    if (PyList_Check(value)) {
        if (in_list) /* a list below a list element: a nested array column */
            return NULL;
        PyObject *element = Py_NewRef(Py_None);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            PyObject *child_shape = shape(PyList_GET_ITEM(value, i), depth, 1), *merged;
            if (child_shape == NULL) {
                Py_DECREF(element);
                return NULL;
            }
            merged = merge(element, child_shape);
            Py_DECREF(child_shape);
            Py_DECREF(element);
            if (merged == NULL)
                return NULL;
            element = merged;
        }
        PyObject *list_shape = PyTuple_Pack(1, element);
        Py_DECREF(element);
        return list_shape;
    }
    return NULL; /* bytes, sets, ...: never produced by the decoder */
}

/* 1: safe, 0: unsafe, -1: error */
static int
crate_safe(PyObject *value)
{
    PyObject *result = shape(value, 0, 0);
    if (result != NULL) {
        Py_DECREF(result);
        return 1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* An instance of a frozen dataclass without slots, its fields set as its __init__ sets them (object.__setattr__,
   in field order). Takes references to nothing. */
static PyObject *
new_instance(PyObject *type, PyObject *const *names, PyObject *const *values, Py_ssize_t count)
{
    /* object.__new__: also sets up the instance's attribute storage (shared keys), as for any instance */
    PyObject *instance = PyBaseObject_Type.tp_new((PyTypeObject *)type, empty_tuple, NULL);
    if (instance == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++)
        if (values[i] == NULL || PyObject_GenericSetAttr(instance, names[i], values[i]) < 0) {
            Py_DECREF(instance);
            return NULL;
        }
    return instance;
}

static PyObject *S_PK, *S_DATA, *S_AUX;

/* layout.split: the Row of pk (a copy of key), data and aux. */
static PyObject *
split(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!configured(RowType && DecimalType && hook_number_kind && max_text_bytes > 0 && max_object_depth > 0))
        return NULL;
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyDict_Check(args[1]))
        return fallback();
    PyObject *key = args[0], *image = args[1], *data = PyDict_New(), *aux = PyDict_New(), *pk = NULL, *name,
             *value, *row = NULL;
    if (data == NULL || aux == NULL)
        goto done;
    Py_ssize_t pos = 0;
    while (PyDict_Next(image, &pos, &name, &value)) {
        int in_key = PyDict_Contains(key, name);
        if (in_key < 0)
            goto done;
        if (in_key)
            continue;
        if (!PyUnicode_Check(name)) {
            PyErr_SetNone(Fallback);
            goto done;
        }
        int safe = valid_object_key(name) ? crate_safe(value) : 0;
        if (safe < 0 || PyDict_SetItem(safe ? data : aux, name, value) < 0)
            goto done;
    }
    if ((pk = PyDict_Copy(key)) != NULL) {
        PyObject *const names[] = {S_PK, S_DATA, S_AUX}, *const values[] = {pk, data, aux};
        row = new_instance(RowType, names, values, 3);
    }
done:
    Py_XDECREF(pk);
    Py_XDECREF(data);
    Py_XDECREF(aux);
    return row;
}

/* ---------------------------------------------------------------- jsonenc.dumps */

typedef struct {
    char *data; /* starts as `small`, moves to the heap when that is full */
    Py_ssize_t length, capacity;
    int wide;   /* whether any byte beyond ASCII was written */
    char small[1024];
} Buffer;

#define BUFFER_INIT(b) ((b).data = (b).small, (b).length = 0, (b).capacity = sizeof (b).small, (b).wide = 0)

static int
reserve(Buffer *b, Py_ssize_t extra)
{
    if (b->length + extra <= b->capacity)
        return 0;
    Py_ssize_t capacity = b->capacity;
    while (capacity < b->length + extra)
        capacity *= 2;
    char *data = b->data == b->small ? PyMem_Malloc(capacity) : PyMem_Realloc(b->data, capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->data == b->small)
        memcpy(data, b->small, b->length);
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static void
buffer_free(Buffer *b)
{
    if (b->data != b->small)
        PyMem_Free(b->data);
}

/* The buffer's text as a str (UTF-8 decoding only when it holds more than ASCII). */
static PyObject *
buffer_text(Buffer *b)
{
    if (b->wide)
        return PyUnicode_DecodeUTF8(b->data, b->length, NULL);
    PyObject *text = PyUnicode_New(b->length, 127);
    if (text != NULL)
        memcpy(PyUnicode_DATA(text), b->data, b->length);
    return text;
}

static int
put(Buffer *b, const char *s, Py_ssize_t n)
{
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->length, s, n);
    b->length += n;
    return 0;
}

static int
put_ascii(Buffer *b, PyObject *text) /* text known to be ASCII */
{
    return put(b, (const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text));
}

/* json.encoder.encode_basestring, as UTF-8: '"', '\\' and control characters escaped, everything else kept. */
static int
put_string(Buffer *b, PyObject *text)
{
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (reserve(b, n * 6 + 2) < 0) /* worst case: every character as \u00XX */
        return -1;
    char *out = b->data + b->length;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\') {
            *out++ = (char)ch;
            continue;
        }
        switch (ch) {
        case '"': *out++ = '\\'; *out++ = '"'; continue;
        case '\\': *out++ = '\\'; *out++ = '\\'; continue;
        case '\n': *out++ = '\\'; *out++ = 'n'; continue;
        case '\r': *out++ = '\\'; *out++ = 'r'; continue;
        case '\t': *out++ = '\\'; *out++ = 't'; continue;
        case '\b': *out++ = '\\'; *out++ = 'b'; continue;
        case '\f': *out++ = '\\'; *out++ = 'f'; continue;
        }
        if (ch < 0x20) {
            *out++ = '\\'; *out++ = 'u'; *out++ = '0'; *out++ = '0';
            *out++ = hex[ch >> 4]; *out++ = hex[ch & 15];
            continue;
        }
        b->wide = 1;
        if (ch < 0x800) {
            *out++ = (char)(0xC0 | (ch >> 6));
            *out++ = (char)(0x80 | (ch & 0x3F));
        }
        else if (ch >= 0xD800 && ch <= 0xDFFF) {
            PyErr_SetNone(Fallback); /* a lone surrogate has no UTF-8 form; the reference keeps it as is */
            return -1;
        }
        else if (ch < 0x10000) {
            *out++ = (char)(0xE0 | (ch >> 12));
            *out++ = (char)(0x80 | ((ch >> 6) & 0x3F));
            *out++ = (char)(0x80 | (ch & 0x3F));
        }
        else {
            *out++ = (char)(0xF0 | (ch >> 18));
            *out++ = (char)(0x80 | ((ch >> 12) & 0x3F));
            *out++ = (char)(0x80 | ((ch >> 6) & 0x3F));
            *out++ = (char)(0x80 | (ch & 0x3F));
        }
    }
    *out++ = '"';
    b->length = out - b->data;
    return 0;
}

static int
put_text_object(Buffer *b, PyObject *text) /* a new reference to a str, consumed */
{
    if (text == NULL)
        return -1;
    int result = PyUnicode_IS_ASCII(text) ? put_ascii(b, text) : (PyErr_SetNone(Fallback), -1);
    Py_DECREF(text);
    return result;
}

static int encode(Buffer *b, PyObject *value, int depth);

#define SMALL_DICT 16

/* encode_dict for a few entries: the entries sorted by key on the stack (insertion sort, str order), no list. */
static int
encode_small_dict(Buffer *b, PyObject *value, int depth)
{
    PyObject *keys[SMALL_DICT], *values[SMALL_DICT], *key, *child;
    Py_ssize_t n = 0, pos = 0;
    while (PyDict_Next(value, &pos, &key, &child)) {
        if (!PyUnicode_CheckExact(key) || n == SMALL_DICT) {
            PyErr_SetNone(Fallback);
            return -1;
        }
        Py_ssize_t i = n++;
        for (; i > 0; i--) {
            int order = PyUnicode_Compare(keys[i - 1], key);
            if (order == -1 && PyErr_Occurred())
                return -1;
            if (order <= 0)
                break;
            keys[i] = keys[i - 1];
            values[i] = values[i - 1];
        }
        keys[i] = key; /* borrowed: the dict is not changed while it is encoded */
        values[i] = child;
    }
    if (put(b, "{", 1) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((i && put(b, ",", 1) < 0) || put_string(b, keys[i]) < 0 || put(b, ":", 1) < 0)
            return -1;
        Py_INCREF(values[i]);
        int encoded = encode(b, values[i], depth + 1);
        Py_DECREF(values[i]);
        if (encoded < 0)
            return -1;
    }
    return put(b, "}", 1);
}

static int
encode_dict(Buffer *b, PyObject *value, int depth)
{
    if (PyDict_GET_SIZE(value) == 0)
        return put(b, "{}", 2);
    if (PyDict_GET_SIZE(value) <= SMALL_DICT)
        return encode_small_dict(b, value, depth);
    PyObject *keys = PyDict_Keys(value);
    if (keys == NULL)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(keys, i))) {
            Py_DECREF(keys);
            PyErr_SetNone(Fallback);
            return -1;
        }
    if (PyList_Sort(keys) < 0 || put(b, "{", 1) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i), *child;
        if ((i && put(b, ",", 1) < 0) || put_string(b, key) < 0 || put(b, ":", 1) < 0)
            goto fail;
        child = PyDict_GetItemWithError(value, key);
        if (child == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetNone(Fallback); /* changed while encoding */
            goto fail;
        }
        Py_INCREF(child);
        int encoded = encode(b, child, depth + 1);
        Py_DECREF(child);
        if (encoded < 0)
            goto fail;
    }
    Py_DECREF(keys);
    return put(b, "}", 1);
fail:
    Py_DECREF(keys);
    return -1;
}

static int
encode(Buffer *b, PyObject *value, int depth)
{
    if (depth > MAX_ENCODE_DEPTH) {
        PyErr_SetNone(Fallback);
        return -1;
    }
    if (PyUnicode_Check(value))
        return put_string(b, value);
    if (value == Py_None)
        return put(b, "null", 4);
    if (value == Py_True)
        return put(b, "true", 4);
    if (value == Py_False)
        return put(b, "false", 5);
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow == 0 && !(number == -1 && PyErr_Occurred())) {
            char digits[24], *end = digits + sizeof digits, *p = end;
            unsigned long long magnitude = number < 0 ? 0ULL - (unsigned long long)number : (unsigned long long)number;
            do
                *--p = (char)('0' + magnitude % 10);
            while ((magnitude /= 10) != 0);
            if (number < 0)
                *--p = '-';
            return put(b, p, end - p);
        }
        PyErr_Clear();
        return put_text_object(b, PyLong_Type.tp_repr(value));
    }
    if (Py_IS_TYPE(value, (PyTypeObject *)DecimalType)) {
        PyObject *text = PyObject_Str(value);
        if (text == NULL)
            return -1;
        Py_ssize_t digits;
        if (PyUnicode_IS_ASCII(text) &&
            plain_fraction((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), &digits)) {
            int result = put_ascii(b, text); /* already canonical: what decimal_text would return */
            Py_DECREF(text);
            return result;
        }
        Py_DECREF(text);
        return put_text_object(b, PyObject_CallOneArg(hook_decimal_text, value));
    }
    if (PyDict_CheckExact(value))
        return encode_dict(b, value, depth);
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
        if (n == 0)
            return put(b, "[]", 2);
        if (put(b, "[", 1) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *child = PySequence_Fast_GET_ITEM(value, i);
            if (i && put(b, ",", 1) < 0)
                return -1;
            Py_INCREF(child);
            int encoded = encode(b, child, depth + 1);
            Py_DECREF(child);
            if (encoded < 0)
                return -1;
        }
        return put(b, "]", 1);
    }
    PyErr_SetNone(Fallback); /* floats, subclasses, anything else: the reference decides */
    return -1;
}

static PyObject *
dumps(PyObject *module, PyObject *value)
{
    if (!configured(DecimalType && hook_decimal_text))
        return NULL;
    Buffer b;
    BUFFER_INIT(b);
    PyObject *result = encode(&b, value, 0) == 0 ? buffer_text(&b) : NULL;
    buffer_free(&b);
    return result;
}

/* ---------------------------------------------------------------- decode.decode */

static PyObject *S_ORDER, *S_OP, *S_INSERT, *S_MODIFY, *S_REMOVE, *S_TABLE_NAME, *S_KEY, *S_KEY_TYPES, *S_IMAGE, *S_VERSION,
    *S_POSITION, *S_IS_TTL_EXPIRY, *S_RAW, *S_KEY_ID, *S_EMPTY, *S_EVENT_SOURCE, *S_AWS_DYNAMODB, *S_EVENT_NAME,
    *S_DYNAMODB, *S_KEYS, *S_CREATED, *S_PRECISION, *S_NEW_IMAGE, *S_USER_IDENTITY, *S_TYPE, *S_SERVICE,
    *S_PRINCIPAL_ID, *S_DYNAMODB_PRINCIPAL, *S_MICROSECOND, *S_MILLISECOND, *S_TAG_S, *S_TAG_N, *S_TAG_B;

static PyObject *dumps(PyObject *module, PyObject *value);

static PyObject *order_token(PyObject *module, PyObject *position);

/* A ChangeEvent as its frozen dataclass __init__ would make it, with its key_id and order cached already (the
   cached_property values: computed once per event anyway, cheaper here). */
static PyObject *
new_event(PyObject *event_type, PyObject *record, PyObject *op, PyObject *table_name, PyObject *key,
          PyObject *key_types, PyObject *image, long long version, int is_ttl_expiry)
{
    PyObject *const names[] = {S_OP,      S_TABLE_NAME, S_KEY,           S_KEY_TYPES, S_IMAGE,
                               S_VERSION, S_POSITION,   S_IS_TTL_EXPIRY, S_RAW,       S_KEY_ID, S_ORDER};
    PyObject *values[] = {op,
                          table_name,
                          key,
                          key_types,
                          image ? image : Py_None,
                          PyLong_FromLongLong(version),
                          PyObject_GetAttr(record, S_POSITION),
                          is_ttl_expiry ? Py_True : Py_False,
                          record,
                          dumps(NULL, key),
                          NULL};
    Py_ssize_t count = 10;
    if (values[5] != NULL && values[6] != NULL) {
        PyObject *token = order_token(NULL, values[6]);
        if (token != NULL) {
            values[10] = PyTuple_Pack(2, values[5], token);
            Py_DECREF(token);
            count = 11;
        }
        else if (PyErr_ExceptionMatches(Fallback))
            PyErr_Clear(); /* an unusual position: the order is computed when asked for */
    }
    PyObject *event = PyErr_Occurred() ? NULL : new_instance(event_type, names, values, count);
    Py_XDECREF(values[5]);
    Py_XDECREF(values[6]);
    Py_XDECREF(values[9]);
    Py_XDECREF(values[10]);
    return event;
}

/* ---------------------------------------------------------------- the record parser
 *
 * decode() straight from the record's bytes: a strict JSON parser (RFC 8259, UTF-8) that builds only what the
 * event needs, the final values of Keys and NewImage included, without the typed {"S": ...} dicts in between.
 * Whatever it does not expect (another shape, an escape in a field name, a number in exponent form as a version,
 * NaN, nesting beyond DynamoDB's, duplicate fields, invalid input) makes it decline: decode() then parses the
 * record the other ways, which also name what is wrong.
 */

typedef struct {
    const unsigned char *p, *end;
} Parser;

#define MAX_SKIP_DEPTH 160 /* values the event does not use, nested deeper: declined */

static inline void
skip_ws(Parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static inline int
expect(Parser *ps, unsigned char c)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return 1;
    }
    return 0;
}

static inline int
peek(Parser *ps, unsigned char c)
{
    skip_ws(ps);
    return ps->p < ps->end && *ps->p == c;
}

static int
hex_value(unsigned char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Plain string bytes: printable ASCII other than '"' and '\\' (filled in at module init). */
static unsigned char plain_byte[256];

/* The end of the run of plain bytes starting at p. (Most strings here are a few bytes long: a word-at-a-time
   scan measured slower.) */
static inline const unsigned char *
plain_run(const unsigned char *p, const unsigned char *end)
{
    while (p < end && plain_byte[*p])
        p++;
    return p;
}

/* A string token (at its opening quote): its raw body [*start, *start + *length) and whether it holds escapes
   (*escaped) or bytes beyond ASCII (*wide). Checks escape syntax and control characters, not UTF-8. */
static int
scan_string(Parser *ps, const unsigned char **start, Py_ssize_t *length, int *escaped, int *wide)
{
    if (!expect(ps, '"'))
        return 0;
    const unsigned char *p = ps->p, *end = ps->end;
    *start = p;
    *escaped = *wide = 0;
    while (p < end) {
        p = plain_run(p, end);
        if (p >= end)
            return 0;
        unsigned char c = *p;
        if (c == '"') {
            *length = p - *start;
            ps->p = p + 1;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c >= 0x80)
            *wide = 1;
        if (c == '\\') {
            *escaped = 1;
            if (++p >= end)
                return 0;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                break;
            case 'u':
                if (end - p < 5 || hex_value(p[1]) < 0 || hex_value(p[2]) < 0 || hex_value(p[3]) < 0 ||
                    hex_value(p[4]) < 0)
                    return 0;
                p += 4;
                break;
            default:
                return 0;
            }
        }
        p++;
    }
    return 0;
}

static unsigned
hex4(const unsigned char *p)
{
    return (unsigned)(hex_value(p[0]) << 12 | hex_value(p[1]) << 8 | hex_value(p[2]) << 4 | hex_value(p[3]));
}

/* The str of a scanned string body; NULL without an exception when it cannot be one here (a lone surrogate,
   invalid UTF-8), NULL with one on a real error. */
static PyObject *
make_string(const unsigned char *s, Py_ssize_t n, int escaped)
{
    PyObject *result;
    if (!escaped)
        result = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    else {
        unsigned char *buffer = PyMem_Malloc(n ? n : 1), *out = buffer; /* unescaped UTF-8 is never longer */
        if (buffer == NULL)
            return PyErr_NoMemory();
        const unsigned char *p = s, *end = s + n;
        while (p < end) {
            if (*p != '\\') {
                *out++ = *p++;
                continue;
            }
            unsigned char c = p[1];
            p += 2;
            switch (c) {
            case 'b': *out++ = '\b'; continue;
            case 'f': *out++ = '\f'; continue;
            case 'n': *out++ = '\n'; continue;
            case 'r': *out++ = '\r'; continue;
            case 't': *out++ = '\t'; continue;
            case 'u': break;
            default: *out++ = c; continue; /* " \ / */
            }
            unsigned code = hex4(p);
            p += 4;
            if (code >= 0xD800 && code <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                unsigned low = hex4(p + 2);
                if (low >= 0xDC00 && low <= 0xDFFF) {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
            }
            if (code >= 0xD800 && code <= 0xDFFF) { /* lone surrogate: the stdlib keeps it, UTF-8 cannot */
                PyMem_Free(buffer);
                return NULL;
            }
            if (code < 0x80)
                *out++ = (unsigned char)code;
            else if (code < 0x800) {
                *out++ = (unsigned char)(0xC0 | (code >> 6));
                *out++ = (unsigned char)(0x80 | (code & 0x3F));
            }
            else if (code < 0x10000) {
                *out++ = (unsigned char)(0xE0 | (code >> 12));
                *out++ = (unsigned char)(0x80 | ((code >> 6) & 0x3F));
                *out++ = (unsigned char)(0x80 | (code & 0x3F));
            }
            else {
                *out++ = (unsigned char)(0xF0 | (code >> 18));
                *out++ = (unsigned char)(0x80 | ((code >> 12) & 0x3F));
                *out++ = (unsigned char)(0x80 | ((code >> 6) & 0x3F));
                *out++ = (unsigned char)(0x80 | (code & 0x3F));
            }
        }
        result = PyUnicode_DecodeUTF8((const char *)buffer, out - buffer, NULL);
        PyMem_Free(buffer);
    }
    if (result == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear(); /* invalid UTF-8: the reference reports it */
    return result;
}

/* Short ASCII strings recur (attribute names above all): a small direct-mapped cache of str objects saves
   building and hashing them again. Strings are immutable, so sharing one between items changes nothing. */
#define CACHE_SLOTS 1024
#define CACHE_MAX_LENGTH 32
static PyObject *string_cache[CACHE_SLOTS];

static PyObject *
cached_string(const unsigned char *s, Py_ssize_t n)
{
    uint64_t head = 0, tail = 0; /* a cheap hash of the first and last (up to) eight bytes and the length */
    memcpy(&head, s, n < 8 ? n : 8);
    memcpy(&tail, s + (n > 8 ? n - 8 : 0), n < 8 ? n : 8);
    uint64_t hash = (head * 0x9E3779B97F4A7C15ULL) ^ ((tail + (uint64_t)n) * 0xC2B2AE3D27D4EB4FULL);
    PyObject **slot = &string_cache[(hash >> 40) & (CACHE_SLOTS - 1)];
    if (*slot != NULL && PyUnicode_GET_LENGTH(*slot) == n && memcmp(PyUnicode_DATA(*slot), s, n) == 0)
        return Py_NewRef(*slot);
    PyObject *text = PyUnicode_New(n, 127);
    if (text == NULL)
        return NULL;
    memcpy(PyUnicode_DATA(text), s, n);
    if (PyObject_Hash(text) == -1) { /* computed once, kept in the object */
        Py_DECREF(text);
        return NULL;
    }
    Py_XSETREF(*slot, Py_NewRef(text));
    return text;
}

static PyObject *
parse_string(Parser *ps)
{
    const unsigned char *s;
    Py_ssize_t n;
    int escaped, wide;
    if (!scan_string(ps, &s, &n, &escaped, &wide))
        return NULL;
    if (!escaped && !wide && n <= CACHE_MAX_LENGTH) /* checked ASCII without control characters */
        return cached_string(s, n);
    return make_string(s, n, escaped);
}

/* A field name compared with an ASCII constant; names with escapes are declined by the caller. */
static int
name_is(const unsigned char *s, Py_ssize_t n, const char *name)
{
    return (size_t)n == strlen(name) && memcmp(s, name, n) == 0;
}

static int
scan_number(Parser *ps, const unsigned char **start, int *integral)
{
    skip_ws(ps);
    const unsigned char *p = ps->p, *end = ps->end;
    *start = p;
    *integral = 1;
    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit((char)*p))
        return 0;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit((char)*p))
            p++;
    if (p < end && *p == '.') {
        *integral = 0;
        if (++p >= end || !is_digit((char)*p))
            return 0;
        while (p < end && is_digit((char)*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *integral = 0;
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit((char)*p))
            return 0;
        while (p < end && is_digit((char)*p))
            p++;
    }
    ps->p = p;
    return 1;
}

static int
valid_utf8(const unsigned char *s, Py_ssize_t n)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    if (text == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(text);
    return 1;
}

static int
literal(Parser *ps, const char *word)
{
    size_t n = strlen(word);
    skip_ws(ps);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0) {
        ps->p += n;
        return 1;
    }
    return 0;
}

/* Whether a scanned string body is a valid string (UTF-8, no lone surrogate escaped). */
static int
valid_string(const unsigned char *s, Py_ssize_t n, int escaped, int wide)
{
    if (escaped) {
        PyObject *text = make_string(s, n, 1);
        Py_XDECREF(text);
        return text != NULL;
    }
    return !wide || valid_utf8(s, n);
}

/* A field name and its colon. Names with escapes are declined: they could spell a field the event uses. */
static int
scan_name(Parser *ps, const unsigned char **s, Py_ssize_t *n)
{
    int escaped, wide;
    return scan_string(ps, s, n, &escaped, &wide) && !escaped && (!wide || valid_utf8(*s, *n)) && expect(ps, ':');
}

/* Step over any JSON value, checking it as strictly as a parse would. */
static int
skip_value(Parser *ps, int depth)
{
    const unsigned char *s;
    Py_ssize_t n;
    int escaped, wide, integral;
    if (depth > MAX_SKIP_DEPTH)
        return 0;
    skip_ws(ps);
    if (ps->p >= ps->end)
        return 0;
    switch (*ps->p) {
    case '"':
        return scan_string(ps, &s, &n, &escaped, &wide) && valid_string(s, n, escaped, wide);
    case '{':
        ps->p++;
        if (expect(ps, '}'))
            return 1;
        do {
            if (!scan_string(ps, &s, &n, &escaped, &wide) || !valid_string(s, n, escaped, wide) ||
                !expect(ps, ':') || !skip_value(ps, depth + 1))
                return 0;
        } while (expect(ps, ','));
        return expect(ps, '}');
    case '[':
        ps->p++;
        if (expect(ps, ']'))
            return 1;
        do {
            if (!skip_value(ps, depth + 1))
                return 0;
        } while (expect(ps, ','));
        return expect(ps, ']');
    case 't':
        return literal(ps, "true");
    case 'f':
        return literal(ps, "false");
    case 'n':
        return literal(ps, "null");
    default:
        return scan_number(ps, &s, &integral);
    }
}

static PyObject *parse_typed(Parser *ps, long depth, char *key_tag);

/* N from its raw text: the C fast paths of convert_number, else the reference hook on the str. */
/* N from its raw text: plain integers and plain fractions here (trailing zeros stripped, as the reference does),
   everything else (exponents, many digits, escapes, bad text) through the reference hook. */
static PyObject *
number_from_text(const unsigned char *s, Py_ssize_t n, int escaped)
{
    if (!escaped) {
        Py_ssize_t i = (n > 0 && s[0] == '-') ? 1 : 0, start = i, int_digits, frac_start, cut;
        while (i < n && is_digit((char)s[i]))
            i++;
        int_digits = i - start;
        cut = n;
        if (int_digits > 0 && i < n && s[i] == '.') { /* a plain fraction: strip its trailing zeros */
            frac_start = ++i;
            while (i < n && is_digit((char)s[i]))
                i++;
            if (i == n && i > frac_start) {
                while (cut > frac_start && s[cut - 1] == '0')
                    cut--;
                if (cut == frac_start) /* all zeros: an integer */
                    cut = frac_start - 1;
                i = cut;
            }
        }
        if (i == cut && int_digits > 0 && int_digits <= max_digits && cut == start + int_digits) {
            if (int_digits <= 18) { /* a plain integer that fits a long long */
                long long value = 0;
                for (Py_ssize_t k = start; k < cut; k++)
                    value = value * 10 + (s[k] - '0');
                return PyLong_FromLongLong(start ? -value : value);
            }
            char text[64]; /* sign and up to max_digits (38) digits */
            if (cut < (Py_ssize_t)sizeof text) {
                memcpy(text, s, cut);
                text[cut] = '\0';
                return PyLong_FromString(text, NULL, 10);
            }
        }
        if (i == cut && int_digits > 0 && cut > start + int_digits + 1 && cut - start - 1 <= max_digits) {
            PyObject *text = PyUnicode_New(cut, 127), *number; /* canonical now: Decimal(text) is exact */
            if (text == NULL)
                return NULL;
            memcpy(PyUnicode_DATA(text), s, cut);
            number = PyObject_CallOneArg(DecimalType, text);
            Py_DECREF(text);
            return number;
        }
    }
    PyObject *text = make_string(s, n, escaped), *number;
    if (text == NULL)
        return NULL;
    number = PyObject_CallOneArg(hook_number, text);
    Py_DECREF(text);
    return number;
}

static PyObject *
parse_number_attribute(Parser *ps)
{
    const unsigned char *s;
    Py_ssize_t n;
    int escaped, wide;
    if (!scan_string(ps, &s, &n, &escaped, &wide))
        return NULL;
    return number_from_text(s, n, escaped);
}

static PyObject *
parse_binary_attribute(Parser *ps)
{
    PyObject *text = parse_string(ps), *checked;
    if (text == NULL)
        return NULL;
    checked = convert_binary(text);
    Py_DECREF(text);
    return checked;
}

/* SS, NS, BS: a JSON array of strings -> the sorted list of distinct converted members. */
static PyObject *
parse_set(Parser *ps, char tag)
{
    if (!expect(ps, '['))
        return NULL;
    PyObject *set = PySet_New(NULL), *list;
    if (set == NULL)
        return NULL;
    if (!expect(ps, ']')) {
        do {
            PyObject *member = tag == 'S' ? parse_string(ps) : tag == 'N' ? parse_number_attribute(ps)
                                                                         : parse_binary_attribute(ps);
            if (member == NULL || PySet_Add(set, member) < 0) {
                Py_XDECREF(member);
                Py_DECREF(set);
                return NULL;
            }
            Py_DECREF(member);
        } while (expect(ps, ','));
        if (!expect(ps, ']')) {
            Py_DECREF(set);
            return NULL;
        }
    }
    list = PySequence_List(set);
    Py_DECREF(set);
    if (list != NULL && PyList_Sort(list) < 0)
        Py_CLEAR(list);
    return list;
}

/* A typed item or M value: {"name": {typed}, ...} -> {name: value}. `key_types`, when given, gets each
   attribute's tag (for Keys). */
static PyObject *
parse_item(Parser *ps, long depth, PyObject *key_types)
{
    if (!expect(ps, '{'))
        return NULL;
    PyObject *item = PyDict_New();
    if (item == NULL)
        return NULL;
    if (expect(ps, '}'))
        return item;
    do {
        char tag = 0;
        PyObject *name = parse_string(ps), *value = NULL;
        if (name != NULL && expect(ps, ':') && (value = parse_typed(ps, depth, key_types ? &tag : NULL)) != NULL &&
            (key_types == NULL || tag != 0) && PyDict_SetItem(item, name, value) == 0 &&
            (key_types == NULL ||
             PyDict_SetItem(key_types, name, tag == 'S' ? S_TAG_S : tag == 'N' ? S_TAG_N : S_TAG_B) == 0)) {
            Py_DECREF(name);
            Py_DECREF(value);
            continue;
        }
        Py_XDECREF(name);
        Py_XDECREF(value);
        Py_DECREF(item);
        return NULL;
    } while (expect(ps, ','));
    if (!expect(ps, '}')) {
        Py_DECREF(item);
        return NULL;
    }
    return item;
}

/* One typed attribute value {"TAG": value}; `depth` counts the documents (M, L) around it. */
static PyObject *
parse_typed(Parser *ps, long depth, char *key_tag)
{
    const unsigned char *t;
    Py_ssize_t n;
    int escaped, wide;
    PyObject *value = NULL;
    if (!expect(ps, '{'))
        return NULL;
    skip_ws(ps);
    if (ps->end - ps->p >= 4 && ps->p[0] == '"' && ps->p[2] == '"' && ps->p[1] >= 'A' && ps->p[1] <= 'Z') {
        t = ps->p + 1; /* a one-letter tag: most of them */
        n = 1;
        ps->p += 3;
    }
    else if (!scan_string(ps, &t, &n, &escaped, &wide) || escaped)
        return NULL;
    if (!expect(ps, ':'))
        return NULL;
    if (n == 1 && (t[0] == 'S' || t[0] == 'N' || t[0] == 'B')) {
        value = t[0] == 'S' ? parse_string(ps) : t[0] == 'N' ? parse_number_attribute(ps) : parse_binary_attribute(ps);
        if (key_tag != NULL)
            *key_tag = (char)t[0];
    }
    else if (n == 1 && (t[0] == 'M' || t[0] == 'L')) {
        if (depth >= max_nesting)
            return NULL;
        if (t[0] == 'M')
            value = parse_item(ps, depth + 1, NULL);
        else if (expect(ps, '[') && (value = PyList_New(0)) != NULL && !expect(ps, ']')) {
            do {
                PyObject *element = parse_typed(ps, depth + 1, NULL);
                if (element == NULL || PyList_Append(value, element) < 0) {
                    Py_XDECREF(element);
                    Py_CLEAR(value);
                    break;
                }
                Py_DECREF(element);
            } while (expect(ps, ','));
            if (value != NULL && !expect(ps, ']'))
                Py_CLEAR(value);
        }
    }
    else if (n == 2 && t[1] == 'S' && (t[0] == 'S' || t[0] == 'N' || t[0] == 'B'))
        value = parse_set(ps, (char)t[0]);
    else if (name_is(t, n, "BOOL"))
        value = literal(ps, "true") ? Py_NewRef(Py_True) : literal(ps, "false") ? Py_NewRef(Py_False) : NULL;
    else if (name_is(t, n, "NULL"))
        value = literal(ps, "true") ? Py_NewRef(Py_None) : NULL;
    if (value != NULL && !expect(ps, '}')) /* exactly one type tag */
        Py_CLEAR(value);
    return value;
}

/* The string value of a field compared with `constant` (an interned str): the constant, or NULL. */
static PyObject *
parse_choice(Parser *ps, PyObject *const *choices)
{
    const unsigned char *s;
    Py_ssize_t n;
    int escaped, wide;
    if (!scan_string(ps, &s, &n, &escaped, &wide) || escaped)
        return NULL;
    for (; *choices != NULL; choices++)
        if (name_is(s, n, PyUnicode_AsUTF8(*choices)))
            return *choices;
    return NULL;
}

typedef struct {
    PyObject *op, *table_name, *key, *key_types, *image;
    long long created;
    int has_created, precision; /* precision: 0 none, 1 micro, 1000 milli */
    int is_ttl_expiry, seen_source, seen_identity, seen_change;
} Fields;

static int
parse_change(Parser *ps, Fields *f)
{
    const unsigned char *s;
    Py_ssize_t n;
    if (!expect(ps, '{'))
        return 0;
    if (expect(ps, '}'))
        return 1;
    do {
        if (!scan_name(ps, &s, &n))
            return 0;
        if (name_is(s, n, "Keys")) {
            if (f->key != NULL || (f->key_types = PyDict_New()) == NULL ||
                (f->key = parse_item(ps, 0, f->key_types)) == NULL)
                return 0;
        }
        else if (name_is(s, n, "NewImage")) {
            if (f->image != NULL || (f->image = parse_item(ps, 0, NULL)) == NULL)
                return 0;
        }
        else if (name_is(s, n, "ApproximateCreationDateTime")) {
            const unsigned char *number;
            int integral;
            if (f->has_created || !scan_number(ps, &number, &integral) || !integral || number[0] == '-' ||
                ps->p - number > 17)
                return 0; /* a fraction, exponent or sign: the reference computes it exactly */
            f->created = 0;
            for (; number < ps->p; number++)
                f->created = f->created * 10 + (*number - '0');
            f->has_created = 1;
        }
        else if (name_is(s, n, "ApproximateCreationDateTimePrecision")) {
            PyObject *const choices[] = {S_MICROSECOND, S_MILLISECOND, NULL};
            PyObject *precision;
            if (f->precision || (precision = parse_choice(ps, choices)) == NULL)
                return 0;
            f->precision = precision == S_MICROSECOND ? 1 : 1000;
        }
        else if (!skip_value(ps, 1))
            return 0;
    } while (expect(ps, ','));
    return expect(ps, '}');
}

/* userIdentity: a TTL expiry when it is an object whose type is "Service" and principalId
   "dynamodb.amazonaws.com" (1: yes, -1: no). */
static int
parse_identity(Parser *ps, Fields *f)
{
    const unsigned char *s;
    Py_ssize_t n;
    int escaped, wide, service = 0, principal = 0;
    if (!peek(ps, '{')) /* not an object: no TTL expiry */
        return skip_value(ps, 1);
    ps->p++;
    if (!expect(ps, '}')) {
        do {
            if (!scan_name(ps, &s, &n))
                return 0;
            int is_type = name_is(s, n, "type"), is_principal = name_is(s, n, "principalId");
            if (!is_type && !is_principal) {
                if (!skip_value(ps, 2))
                    return 0;
                continue;
            }
            if ((is_type && service) || (is_principal && principal))
                return 0; /* a duplicate: the last one would count */
            int match = 0;
            if (peek(ps, '"')) {
                if (!scan_string(ps, &s, &n, &escaped, &wide) || escaped || (wide && !valid_utf8(s, n)))
                    return 0;
                match = name_is(s, n, is_type ? "Service" : "dynamodb.amazonaws.com");
            }
            else if (!skip_value(ps, 2))
                return 0;
            if (is_type)
                service = match ? 1 : -1;
            else
                principal = match ? 1 : -1;
        } while (expect(ps, ','));
        if (!expect(ps, '}'))
            return 0;
    }
    f->is_ttl_expiry = service == 1 && principal == 1;
    return 1;
}

static int
parse_document(Parser *ps, Fields *f)
{
    const unsigned char *s;
    Py_ssize_t n;
        if (!expect(ps, '{') || expect(ps, '}'))
        return 0;
    do {
        if (!scan_name(ps, &s, &n))
            return 0;
        if (name_is(s, n, "eventSource")) {
            PyObject *const choices[] = {S_AWS_DYNAMODB, NULL};
            if (f->seen_source || parse_choice(ps, choices) == NULL)
                return 0;
            f->seen_source = 1;
        }
        else if (name_is(s, n, "eventName")) {
            PyObject *const choices[] = {S_INSERT, S_MODIFY, S_REMOVE, NULL};
            if (f->op != NULL || (f->op = parse_choice(ps, choices)) == NULL)
                return 0;
        }
        else if (name_is(s, n, "tableName")) {
            if (f->table_name != NULL || (f->table_name = parse_string(ps)) == NULL)
                return 0;
        }
        else if (name_is(s, n, "dynamodb")) {
            if (f->seen_change || !parse_change(ps, f))
                return 0;
            f->seen_change = 1;
        }
        else if (name_is(s, n, "userIdentity")) {
            if (f->seen_identity || !parse_identity(ps, f))
                return 0;
            f->seen_identity = 1;
        }
        else if (!skip_value(ps, 1))
            return 0;
    } while (expect(ps, ','));
    if (!expect(ps, '}'))
        return 0;
    skip_ws(ps);
    return ps->p == ps->end; /* nothing after the document */
}

/* decode_record(data, record, ChangeEvent): decode() for a well-formed record, straight from its bytes. */
static PyObject *
decode_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!configured(DecimalType && hook_number && hook_binary && hook_decimal_text && max_digits > 0 &&
                    max_nesting > 0))
        return NULL;
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyType_Check(args[2]))
        return fallback();
    Parser ps = {(const unsigned char *)PyBytes_AS_STRING(args[0]),
                 (const unsigned char *)PyBytes_AS_STRING(args[0]) + PyBytes_GET_SIZE(args[0])};
    Fields f = {0};
    PyObject *event = NULL;
    long long version;
    if (!parse_document(&ps, &f) || PyErr_Occurred() || !f.seen_source || f.op == NULL || f.key == NULL ||
        PyDict_GET_SIZE(f.key) == 0 || !f.has_created || f.created >= 100000000000000000LL ||
        PyDict_GET_SIZE(f.key_types) != PyDict_GET_SIZE(f.key))
        goto done;
    long long factor = f.precision ? f.precision
                       : f.created < 100000000000LL ? 1000000 : f.created < 100000000000000LL ? 1000 : 1;
    if (__builtin_mul_overflow(f.created, factor, &version))
        goto done;
    if (f.op == S_REMOVE)
        Py_CLEAR(f.image); /* a REMOVE has no image, whatever the record carries */
    else if (f.image == NULL)
        goto done;
    else {
        PyObject *name, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(f.key, &pos, &name, &value)) { /* the row's pk and data must describe one item */
            PyObject *other = PyDict_GetItemWithError(f.image, name);
            int same = other == NULL ? !PyErr_Occurred() : PyObject_RichCompareBool(other, value, Py_EQ);
            if (same <= 0)
                goto done;
        }
    }
    event = new_event(args[2], args[1], f.op, f.table_name ? f.table_name : S_EMPTY, f.key, f.key_types, f.image,
                      version, f.op == S_REMOVE && f.is_ttl_expiry);
done:
    Py_XDECREF(f.table_name);
    Py_XDECREF(f.key);
    Py_XDECREF(f.key_types);
    Py_XDECREF(f.image);
    if (event == NULL && !PyErr_Occurred())
        PyErr_SetNone(Fallback);
    return event;
}

/* ---------------------------------------------------------------- event.Position.order_token */

static PyObject *S_SHARD_ID, *S_SEQUENCE_NUMBER, *S_SUB_SEQUENCE_NUMBER;
static PyObject *hook_lineage_prefix; /* event._lineage_prefix: shard id -> "NNNNNNNNNNNNN." (cached there too) */
static PyObject *prefixes;            /* shard id -> prefix, a dict kept small */
static long seqno_width = -1;

/* The order token of a Position whose sequence number is plain ASCII digits (at most seqno_width of them) and whose
   sub-sequence number has at most 10 digits: prefix, zero-padded sequence number, '.', zero-padded sub number. */
static PyObject *
order_token(PyObject *module, PyObject *position)
{
    if (!configured(hook_lineage_prefix && seqno_width > 0))
        return NULL;
    PyObject *shard = PyObject_GetAttr(position, S_SHARD_ID), *sequence = NULL, *sub = NULL, *prefix = NULL,
             *token = NULL;
    if (shard == NULL || (sequence = PyObject_GetAttr(position, S_SEQUENCE_NUMBER)) == NULL ||
        (sub = PyObject_GetAttr(position, S_SUB_SEQUENCE_NUMBER)) == NULL)
        goto done;
    if (!PyUnicode_CheckExact(shard) || !PyUnicode_CheckExact(sequence) || !PyUnicode_IS_ASCII(sequence) ||
        !PyLong_CheckExact(sub)) {
        PyErr_SetNone(Fallback);
        goto done;
    }
    Py_ssize_t digits = PyUnicode_GET_LENGTH(sequence);
    const char *s = (const char *)PyUnicode_DATA(sequence);
    for (Py_ssize_t i = 0; i < digits; i++)
        if (!is_digit(s[i])) {
            PyErr_SetNone(Fallback);
            goto done;
        }
    long long number = PyLong_AsLongLong(sub);
    if (digits == 0 || digits > seqno_width || number < 0 || number > 9999999999LL) {
        PyErr_Clear();
        PyErr_SetNone(Fallback);
        goto done;
    }
    if (prefixes == NULL && (prefixes = PyDict_New()) == NULL)
        goto done;
    prefix = PyDict_GetItemWithError(prefixes, shard);
    if (prefix != NULL)
        Py_INCREF(prefix);
    else {
        if (PyErr_Occurred() || (prefix = PyObject_CallOneArg(hook_lineage_prefix, shard)) == NULL)
            goto done;
        if (!PyUnicode_CheckExact(prefix) || !PyUnicode_IS_ASCII(prefix)) {
            PyErr_SetNone(Fallback);
            goto done;
        }
        if (PyDict_GET_SIZE(prefixes) >= 4096)
            PyDict_Clear(prefixes);
        if (PyDict_SetItem(prefixes, shard, prefix) < 0)
            goto done;
    }
    Py_ssize_t head = PyUnicode_GET_LENGTH(prefix);
    if ((token = PyUnicode_New(head + seqno_width + 11, 127)) == NULL)
        goto done;
    char *out = (char *)PyUnicode_DATA(token);
    memcpy(out, PyUnicode_DATA(prefix), head);
    out += head;
    memset(out, '0', seqno_width - digits);
    memcpy(out + seqno_width - digits, s, digits);
    out += seqno_width;
    *out++ = '.';
    for (int i = 9; i >= 0; i--, number /= 10)
        out[i] = (char)('0' + number % 10);
done:
    Py_XDECREF(shard);
    Py_XDECREF(sequence);
    Py_XDECREF(sub);
    Py_XDECREF(prefix);
    return token;
}

static int
intern_strings(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } table[] = {
        {&S_ORDER, "order"}, {&S_OP, "op"}, {&S_INSERT, "INSERT"}, {&S_MODIFY, "MODIFY"}, {&S_REMOVE, "REMOVE"},
        {&S_TABLE_NAME, "table_name"}, {&S_KEY, "key"}, {&S_KEY_TYPES, "key_types"}, {&S_IMAGE, "image"},
        {&S_VERSION, "version"}, {&S_POSITION, "position"}, {&S_IS_TTL_EXPIRY, "is_ttl_expiry"}, {&S_RAW, "raw"},
        {&S_KEY_ID, "key_id"}, {&S_EMPTY, ""}, {&S_EVENT_SOURCE, "eventSource"}, {&S_AWS_DYNAMODB, "aws:dynamodb"},
        {&S_EVENT_NAME, "eventName"}, {&S_DYNAMODB, "dynamodb"}, {&S_KEYS, "Keys"},
        {&S_CREATED, "ApproximateCreationDateTime"}, {&S_PRECISION, "ApproximateCreationDateTimePrecision"},
        {&S_NEW_IMAGE, "NewImage"}, {&S_USER_IDENTITY, "userIdentity"}, {&S_TYPE, "type"}, {&S_SERVICE, "Service"},
        {&S_PRINCIPAL_ID, "principalId"}, {&S_DYNAMODB_PRINCIPAL, "dynamodb.amazonaws.com"},
        {&S_MICROSECOND, "MICROSECOND"}, {&S_MILLISECOND, "MILLISECOND"}, {&S_TAG_S, "S"}, {&S_TAG_N, "N"},
        {&S_TAG_B, "B"}, {&S_SHARD_ID, "shard_id"}, {&S_SEQUENCE_NUMBER, "sequence_number"},
        {&S_SUB_SEQUENCE_NUMBER, "sub_sequence_number"}, {&S_PK, "pk"}, {&S_DATA, "data"}, {&S_AUX, "aux"}, {&KIND_STR, "str"}, {&KIND_BOOL, "bool"}, {&KIND_INT, "int"}, {&KIND_FLOAT, "float"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if ((*table[i].slot = PyUnicode_InternFromString(table[i].text)) == NULL)
            return -1;
    return 0;
}

/* ---------------------------------------------------------------- configuration */

static PyObject *
configure(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"decimal",        "parse_number",     "binary",         "number_kind", "decimal_text",
                            "row",            "lineage_prefix",   "max_digits",     "max_nesting", "max_text_bytes",
                            "max_object_depth", "seqno_width",    NULL};
    PyObject *decimal = NULL, *number = NULL, *binary = NULL, *kind = NULL, *text = NULL, *row = NULL,
             *lineage = NULL;
    long digits = -1, nesting = -1, text_bytes = -1, object_depth = -1, width = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOOlllll", names, &decimal, &number, &binary, &kind, &text,
                                     &row, &lineage, &digits, &nesting, &text_bytes, &object_depth, &width))
        return NULL;
#define SET(slot, value)                                                                                        \
    if (value != NULL)                                                                                          \
    Py_XSETREF(slot, Py_NewRef(value))
    SET(DecimalType, decimal);
    SET(hook_number, number);
    SET(hook_binary, binary);
    SET(hook_number_kind, kind);
    SET(hook_decimal_text, text);
    SET(RowType, row);
    SET(hook_lineage_prefix, lineage);
#undef SET
    if (width > 0)
        seqno_width = width;
    if (digits > 0)
        max_digits = digits;
    if (nesting > 0)
        max_nesting = nesting;
    if (text_bytes > 0)
        max_text_bytes = text_bytes;
    if (object_depth > 0)
        max_object_depth = object_depth;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "Set the reference hooks and limits (keyword arguments); each module sets its own."},
    {"from_item", from_item, METH_O, "values.from_item for well-formed items; raises Fallback otherwise."},
    {"split", (PyCFunction)(void (*)(void))split, METH_FASTCALL,
     "layout.split(key, image) -> Row; raises Fallback when the reference must decide."},
    {"decode_record", (PyCFunction)(void (*)(void))decode_record, METH_FASTCALL,
     "decode_record(data, record, ChangeEvent): decode() of well-formed record bytes; raises Fallback otherwise."},
    {"order_token", order_token, METH_O, "Position.order_token for plain sequence numbers; raises Fallback otherwise."},
    {"dumps", dumps, METH_O, "jsonenc.dumps for plain values; raises Fallback when the reference must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Fallback = PyErr_NewException("kcl_relay.cdc._speedups.Fallback", NULL, NULL);
    for (int c = 0x20; c < 0x80; c++)
        plain_byte[c] = c != '"' && c != '\\';
    empty_tuple = PyTuple_New(0);
    if (Fallback == NULL || empty_tuple == NULL || intern_strings() < 0 || PyModule_AddObjectRef(module, "Fallback", Fallback) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
