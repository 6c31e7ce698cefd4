<?php
// LMS-bridge test helper (not part of Moodle): create on a *test* Moodle site what
// rules/README.md says an admin creates before go-live for the shipped benefits rules:
//   - courses BEN-2026 and BEN-2026-MGR (idnumber = shortname), each with an enabled manual
//     enrolment instance;
//   - cohort BEN2026 (idnumber, system context);
//   - custom user profile fields with short names `title` and `roles` (text).
// Idempotent: whatever exists already is kept (and a missing idnumber or manual instance added).
// Uses Moodle's own APIs: create_course, cohort_add_cohort, profile_save_category and
// profile_save_field (user/profile/definelib.php, Moodle 4.3).
// Usage: php tests/moodle_site_setup.php /path/to/moodle
define('CLI_SCRIPT', true);

$moodledir = $argv[1] ?? '/tmp/moodle';
require($moodledir . '/config.php');
require_once($CFG->libdir . '/clilib.php');
require_once($CFG->dirroot . '/course/lib.php');
require_once($CFG->dirroot . '/cohort/lib.php');
require_once($CFG->dirroot . '/user/profile/lib.php');
require_once($CFG->dirroot . '/user/profile/definelib.php');

\core\session\manager::set_user(get_admin());

$courses = [
    'BEN-2026' => 'Benefits 2026: open enrolment',
    'BEN-2026-MGR' => 'Benefits 2026: for managers',
];
$cohorts = ['BEN2026' => 'Benefits 2026'];
$fields = ['title' => 'Job title', 'roles' => 'HR role codes'];

/** The course named by idnumber or shortname, created if neither exists. */
function ensure_course(string $shortname, string $fullname): stdClass {
    global $DB;
    $course = $DB->get_record('course', ['idnumber' => $shortname])
        ?: $DB->get_record('course', ['shortname' => $shortname]);
    if ($course) {
        if ($course->idnumber === '') {
            $DB->set_field('course', 'idnumber', $shortname, ['id' => $course->id]);
            $course->idnumber = $shortname;
            echo "course $shortname: idnumber set\n";
        } else {
            echo "course $shortname: exists (id $course->id)\n";
        }
        return $course;
    }
    $course = create_course((object) [
        'category' => core_course_category::get_default()->id,
        'fullname' => $fullname,
        'shortname' => $shortname,
        'idnumber' => $shortname,
        'summary' => '',
        'summaryformat' => FORMAT_HTML,
    ]);
    echo "course $shortname: created (id $course->id)\n";
    return $course;
}

/** An enabled manual enrolment instance on the course (new courses get one by default). */
function ensure_manual_instance(stdClass $course): void {
    global $DB;
    $plugin = enrol_get_plugin('manual');
    if ($plugin === null) {
        cli_error('the manual enrolment plugin is not enabled on this site');
    }
    $instance = $DB->get_record('enrol', ['courseid' => $course->id, 'enrol' => 'manual'], '*',
        IGNORE_MULTIPLE);
    if (!$instance) {
        $plugin->add_default_instance($course);
        echo "course $course->shortname: manual enrolment instance added\n";
    } else if ((int) $instance->status !== ENROL_INSTANCE_ENABLED) {
        $plugin->update_status($instance, ENROL_INSTANCE_ENABLED);
        echo "course $course->shortname: manual enrolment instance enabled\n";
    }
}

function ensure_cohort(string $idnumber, string $name): void {
    global $DB;
    $context = context_system::instance();
    $cohort = $DB->get_record('cohort', ['idnumber' => $idnumber, 'contextid' => $context->id]);
    if ($cohort) {
        echo "cohort $idnumber: exists (id $cohort->id)\n";
        return;
    }
    $id = cohort_add_cohort((object) [
        'contextid' => $context->id,
        'name' => $name,
        'idnumber' => $idnumber,
        'description' => '',
        'descriptionformat' => FORMAT_HTML,
        'visible' => 1,
    ]);
    echo "cohort $idnumber: created (id $id)\n";
}

/** The first profile field category, created when the site has none. */
function field_category(): int {
    global $DB;
    $categories = $DB->get_records('user_info_category', null, 'sortorder ASC', 'id', 0, 1);
    if ($categories) {
        return (int) reset($categories)->id;
    }
    profile_save_category((object) ['name' => get_string('profiledefaultcategory', 'admin')]);
    $categories = $DB->get_records('user_info_category', null, 'sortorder ASC', 'id', 0, 1);
    return (int) reset($categories)->id;
}

function ensure_text_field(string $shortname, string $name): void {
    global $DB;
    $field = $DB->get_record('user_info_field', ['shortname' => $shortname]);
    if ($field) {
        echo "profile field $shortname: exists ($field->datatype, id $field->id)\n";
        if ($field->datatype !== 'text') {
            cli_problem("profile field $shortname is $field->datatype, not text");
        }
        return;
    }
    // The defaults of the admin form (user/profile/definelib.php, field/text/define.class.php).
    profile_save_field((object) [
        'shortname' => $shortname,
        'name' => $name,
        'datatype' => 'text',
        'description' => ['text' => '', 'format' => FORMAT_HTML],
        'categoryid' => field_category(),
        'required' => 0,
        'locked' => 0,
        'visible' => PROFILE_VISIBLE_ALL,
        'forceunique' => 0,
        'signup' => 0,
        'defaultdata' => '',
        'param1' => 30,
        'param2' => 2048,
        'param3' => 0,
        'param4' => '',
        'param5' => '',
    ], []);
    echo "profile field $shortname: created\n";
}

foreach ($courses as $shortname => $fullname) {
    ensure_manual_instance(ensure_course($shortname, $fullname));
}
foreach ($cohorts as $idnumber => $name) {
    ensure_cohort($idnumber, $name);
}
foreach ($fields as $shortname => $name) {
    ensure_text_field($shortname, $name);
}
