/* Stand-in libnvinfer / libnvinfer_plugin / libnvonnxparser for IMPORTING the real
 * TensorRT Python bindings on a machine without TensorRT's libraries (their -libs wheels
 * cannot be installed here). Every factory returns NULL, so nothing can be created: the
 * bindings can only be inspected (classes, methods, enums, pybind signatures). */
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
