/* Swift bridging header for an app that links an edgec model named `tiny`
 * (Build Settings > Objective-C Bridging Header). Header Search Paths must include the
 * directory of tiny.h (the build phase's output) and edgec's runtime/include. */
#include "edgec_runtime.h"
#include "tiny.h"
