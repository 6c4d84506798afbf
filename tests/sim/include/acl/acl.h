/*
 * acl.h - AscendCL umbrella header (simulated runtime).
 *
 * Programs include this one header; it pulls in the base types, error codes
 * and the runtime API.
 */
#ifndef INC_EXTERNAL_ACL_ACL_H_
#define INC_EXTERNAL_ACL_ACL_H_

#include "acl_rt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ACL_MAJOR_VERSION 1
#define ACL_MINOR_VERSION 8
#define ACL_PATCH_VERSION 0

/**
 * @ingroup AscendCL
 * @brief initialize AscendCL
 * @param configPath [IN] path of a JSON configuration file, or NULL
 * @retval ACL_SUCCESS, ACL_ERROR_REPEAT_INITIALIZE, ACL_ERROR_INVALID_FILE
 *         (unreadable file) or ACL_ERROR_PARSE_FILE (not a JSON object)
 */
ACL_FUNC_VISIBILITY aclError aclInit(const char *configPath);

/**
 * @ingroup AscendCL
 * @brief release every resource of the process and deinitialize AscendCL
 */
ACL_FUNC_VISIBILITY aclError aclFinalize(void);

ACL_FUNC_VISIBILITY aclError aclrtGetVersion(int32_t *majorVersion, int32_t *minorVersion, int32_t *patchVersion);

#ifdef __cplusplus
}
#endif

#endif /* INC_EXTERNAL_ACL_ACL_H_ */
